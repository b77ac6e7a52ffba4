"""SSRF rules, unit by unit, and the sender refusing blocked addresses at delivery time (real sockets)."""

from __future__ import annotations

import pytest
from standardwebhooks import Webhook

from consumers.webhooks.addresses import AddressPolicy, BlockedAddress
from consumers.webhooks.sender import Sender
from consumers.webhooks.signing import Signer
from contract.deliveries import Delivery
from tests.processes import WEBHOOK_SECRET
from tests.webhook_receiver import Answer, Receiver

STRICT = AddressPolicy()
LOCAL_DEV = AddressPolicy.from_cidrs(["127.0.0.0/8"])


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "IPv4-mapped"),
        ("::ffff:8.8.8.8", "IPv4-mapped"),
        ("255.255.255.255", "broadcast"),
        ("192.0.2.10", "not a public address"),  # documentation range
        ("198.18.0.1", "not a public address"),  # benchmarking range
    ],
)
def test_each_blocked_address_class_is_refused_naming_its_rule(address: str, rule: str) -> None:
    with pytest.raises(BlockedAddress, match=rule):
        STRICT.check_address(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_unicast_addresses_pass(address: str) -> None:
    STRICT.check_address(address)  # raises BlockedAddress when refused, which fails the test


def test_the_allow_list_opens_only_what_it_names() -> None:
    LOCAL_DEV.check_address("127.0.0.1")
    for address in ("::ffff:127.0.0.1", "10.0.0.1", "169.254.169.254", "::1"):
        with pytest.raises(BlockedAddress):
            LOCAL_DEV.check_address(address)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://example.com/hook", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]:8080/hook", "loopback"),
        ("https://[::ffff:10.0.0.1]/hook", "IPv4-mapped"),
        ("http://100.64.1.1/hook", "carrier-grade NAT"),
    ],
)
async def test_urls_are_refused_by_scheme_or_literal_address(url: str, rule: str) -> None:
    with pytest.raises(BlockedAddress, match=rule):
        await STRICT.vet_url(url)


async def test_a_name_is_refused_when_it_resolves_to_a_blocked_address() -> None:
    with pytest.raises(BlockedAddress, match=r"localhost resolves to .*loopback"):
        await STRICT.vet_url("http://localhost:8000/hook")
    await LOCAL_DEV.vet_url("http://localhost:8000/hook")  # resolves to 127.0.0.1 only


def delivery(url: str) -> Delivery:
    return Delivery(id="evt_test", job_id="job-1", owner="owner", event="completed", seq=3, url=url, body='{"a":1}')


async def test_the_sender_refuses_blocked_addresses_at_delivery_and_signs_what_it_sends() -> None:
    receiver = await Receiver().start()
    strict = Sender(STRICT, Signer(WEBHOOK_SECRET, {}), 5.0, 8, 2)
    allowed = Sender(LOCAL_DEV, Signer(WEBHOOK_SECRET, {}), 5.0, 8, 2)
    try:
        for url in (receiver.url("literal"), f"http://localhost:{receiver.port}/named"):
            attempt = await strict.send(delivery(url))
            assert attempt.blocked and not attempt.ok, attempt
            assert "loopback" in (attempt.error or "")
        assert receiver.received("literal") == [] and receiver.received("named") == []

        attempt = await allowed.send(delivery(f"http://localhost:{receiver.port}/named"))
        assert attempt.ok and attempt.status_code == 200
        [got] = receiver.received("named")
        assert Webhook(WEBHOOK_SECRET).verify(got.body, got.headers) == {"a": 1}
        assert got.webhook_id == "evt_test"
    finally:
        await strict.close()
        await allowed.close()
        await receiver.stop()


async def test_redirects_are_not_followed_and_count_as_failures() -> None:
    receiver = await Receiver().start()
    receiver.script("moved", Answer(302, {"Location": receiver.url("elsewhere")}))
    sender = Sender(LOCAL_DEV, Signer(WEBHOOK_SECRET, {}), 5.0, 8, 2)
    try:
        attempt = await sender.send(delivery(receiver.url("moved")))
        assert attempt.status_code == 302 and not attempt.ok
        assert len(receiver.received("moved")) == 1
        assert receiver.received("elsewhere") == []
    finally:
        await sender.close()
        await receiver.stop()


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("::7f00:1", "IPv4-compatible"),  # ::127.0.0.1
        ("2002:7f00:1::", "6to4"),  # wraps 127.0.0.1
        ("2002:c0a8:101::1", "6to4"),  # wraps 192.168.1.1
        ("64:ff9b:1::a00:1", "local NAT64"),
        ("fec0::1", "site-local"),
    ],
)
def test_ipv6_forms_that_reach_private_ipv4_are_refused(address: str, rule: str) -> None:
    with pytest.raises(BlockedAddress, match=rule):
        STRICT.check_address(address)
