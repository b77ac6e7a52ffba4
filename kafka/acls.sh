#!/bin/sh
# Easel's Kafka ACLs: what each process's user may do. Idempotent (adding an ACL that exists changes nothing).
# compose's `kafka-acls` service runs it once the broker is up; tests/test_kafka_security.py runs it against a
# local broker, so what is tested is what is deployed.
#
#   ADMIN_PASSWORD=...  [BOOTSTRAP=kafka:9092] [TOPIC_PREFIX=easel] [KAFKA_ACLS=/opt/kafka/bin/kafka-acls.sh] acls.sh
#
# Users: api (the HTTP API), runner (GPU runners), webhooks (the dispatcher), producer (an optional trusted
# system that writes jobs straight to the requests topic). admin is the super user and needs no ACL.
# Topics are those of contract/topics.py; the broker denies whatever is not allowed here.
set -eu
set -f  # KAFKA_ACLS may hold a classpath wildcard for the JVM, not for the shell

: "${ADMIN_PASSWORD:?set ADMIN_PASSWORD to the Kafka admin user's password}"
BOOTSTRAP=${BOOTSTRAP:-kafka:9092}
P=${TOPIC_PREFIX:-easel}
KAFKA_ACLS=${KAFKA_ACLS:-/opt/kafka/bin/kafka-acls.sh}

admin_config=$(mktemp)
trap 'rm -f "$admin_config"' EXIT
cat > "$admin_config" <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$ADMIN_PASSWORD";
EOF

# Each call starts a JVM: they run side by side, and the script fails if any failed.
calls=""
allow() {
  $KAFKA_ACLS --bootstrap-server "$BOOTSTRAP" --command-config "$admin_config" --add "$@" > /dev/null &
  calls="$calls $!"
}
prefixed="--resource-pattern-type prefixed"

# Everyone: see every Easel topic (each process checks the topics exist at start) and produce idempotently.
everyone="--allow-principal User:api --allow-principal User:runner --allow-principal User:webhooks \
--allow-principal User:producer"
allow $everyone --operation Describe --topic "$P." $prefixed
allow $everyone --operation IdempotentWrite --cluster

# The API writes jobs and cancels; at submit it also writes the job's IN_QUEUE status and its queued event.
# It follows statuses, events and webhook delivery statuses with group-less consumers.
allow --allow-principal User:api --operation Write \
  --topic "$P.jobs.requests" --topic "$P.jobs.state" --topic "$P.jobs.events" --topic "$P.jobs.control"
allow --allow-principal User:api --operation Read \
  --topic "$P.jobs.state" --topic "$P.jobs.events" --topic "$P.webhooks.status"
# Several models (EASEL_MODELS): each model after the first has its request topic "$P.jobs.requests.<name>" and its
# runner group "$P.runners.<name>". The API describes every runner group for RunPod's /health census.
allow --allow-principal User:api --operation Write --topic "$P.jobs.requests." $prefixed
allow --allow-principal User:api --operation Describe --group "$P.runners" $prefixed

# Runners share the requests in their group, follow cancels and statuses, and write every later status and
# event (and dead letters) in transactions whose ids start with "$P.runner.".
allow --allow-principal User:runner --operation Read \
  --topic "$P.jobs.requests" --topic "$P.jobs.control" --topic "$P.jobs.state" --group "$P.runners"
allow --allow-principal User:runner --operation Read --topic "$P.jobs.requests." --group "$P.runners." $prefixed
allow --allow-principal User:runner --operation Write \
  --topic "$P.jobs.state" --topic "$P.jobs.events" --topic "$P.jobs.dead-letters"
allow --allow-principal User:runner --operation Write --operation Describe --transactional-id "$P.runner." $prefixed

# The dispatcher reads requests (webhook targets) and events in its group, follows statuses (to render bodies),
# and owns the webhook topics: it creates, writes and reads them. Besides, it only dead-letters events it could
# not route.
allow --allow-principal User:webhooks --operation Read \
  --topic "$P.jobs.requests" --topic "$P.jobs.events" --topic "$P.jobs.state" --group "$P.webhooks"
allow --allow-principal User:webhooks --operation Read --topic "$P.jobs.requests." $prefixed
allow --allow-principal User:webhooks --operation Write --topic "$P.jobs.dead-letters"
allow --allow-principal User:webhooks --operation Create --operation Write --operation Read \
  --topic "$P.webhooks." $prefixed

# A trusted producer writes jobs and may follow their statuses and events.
allow --allow-principal User:producer --operation Write --topic "$P.jobs.requests"
allow --allow-principal User:producer --operation Write --topic "$P.jobs.requests." $prefixed
allow --allow-principal User:producer --operation Read --topic "$P.jobs.state" --topic "$P.jobs.events"

failed=0
for call in $calls; do
  wait "$call" || failed=1
done
[ "$failed" = 0 ] || { echo "some of Easel's ACLs could not be added" >&2; exit 1; }
echo "Easel's ACLs are in place"
