"""A local S3-compatible store on loopback: S3Proxy with its filesystem backend, from Maven jars.

`make` copies the jars into `<home>/s3proxy/libs` (see s3proxy/pom.xml). Like easel/local_kafka.py, this
module writes the configuration, starts the JVM, waits until it answers HTTP, and stops it with SIGTERM; one
that dies while starting fails fast with the tail of its log. Buckets are folders under `data_dir`, objects files.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from pathlib import Path

from easel.lifecycle import stop_process

START_TIMEOUT_S = 60.0
REGION = "us-east-1"  # S3Proxy answers to any region; clients still need one to sign with

# filesystem-nio2: the plain `filesystem` provider is deprecated in S3Proxy 2.6; nio2 wants a jclouds identity
# too, which it never checks.
PROPERTIES = """\
s3proxy.endpoint=http://127.0.0.1:{port}
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity={identity}
s3proxy.credential={credential}
jclouds.provider=filesystem-nio2
jclouds.identity={identity}
jclouds.credential={credential}
jclouds.filesystem.basedir={data_dir}
"""
# Logback's default is every DEBUG line of Jetty and jclouds; warnings are what a failed start needs.
LOGBACK = """\
<configuration>
  <appender name="out" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{HH:mm:ss.SSS} %-5level %logger{36} %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="out"/></root>
</configuration>
"""


class S3Error(RuntimeError):
    """The local S3 store could not be started."""


class LocalS3:
    """One S3Proxy on `port`, signing with `identity` / `credential` (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)."""

    def __init__(self, home: Path, port: int = 19000, identity: str = "easel", credential: str = "easel-local") -> None:
        self.root = home.resolve() / "s3proxy"
        self.libs = self.root / "libs"
        self.data_dir = self.root / f"data-{port}"
        self.log_file = self.root / f"s3proxy-{port}.log"
        self.port = port
        self.identity = identity
        self.credential = credential
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What an Easel process needs to reach this store (with EASEL_BLOB_URL=s3://bucket/prefix)."""
        return {
            "EASEL_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.identity,
            "AWS_SECRET_ACCESS_KEY": self.credential,
            "AWS_REGION": REGION,
        }

    def create_bucket(self, name: str) -> None:
        """The filesystem backend's bucket is a folder (before or after start). `name` must follow S3's rules
        (3 to 63 lower-case letters, digits, dots, hyphens): S3Proxy answers NoSuchBucket for any other folder."""
        (self.data_dir / name).mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        if not any(self.libs.glob("s3proxy-*.jar")):
            raise S3Error(f"no S3Proxy jars in {self.libs}: run `make install` first")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        properties = self.root / f"s3proxy-{self.port}.properties"
        properties.write_text(PROPERTIES.format(
            port=self.port, identity=self.identity, credential=self.credential, data_dir=self.data_dir
        ))
        logback = self.root / "logback.xml"
        logback.write_text(LOGBACK)
        command = [
            os.environ.get("JAVA", "java"), "-Xmx256m", "-Djava.awt.headless=true",
            f"-Dlogback.configurationFile={logback}",
            "-cp", f"{self.libs}/*",  # expanded by the JVM, not the shell
            "org.gaul.s3proxy.Main", "--properties", str(properties),
        ]
        with self.log_file.open("wb") as log:  # the JVM keeps its own copy of the file
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_until_ready()

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout_s)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise S3Error(f"S3Proxy exited with code {self.process.returncode}:\n{self.log_tail()}")
            if self._answers():
                return
            time.sleep(0.2)
        self.stop()
        raise S3Error(f"S3Proxy did not answer within {START_TIMEOUT_S:g} s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        """Any HTTP answer will do (an anonymous request is refused with 403): Jetty is serving."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", "/")
            connection.getresponse()
            return True
        except OSError:  # refused, reset or timed out while the JVM starts
            return False
        finally:
            connection.close()
