"""Shared helpers of the Kafka-client compatibility scripts (run by
tests/tests/kafka_clients.rs): one producer and one consumer interface over
kafka-python (`kafka`) and confluent-kafka (`confluent`, librdkafka inside).
The consumers use assign() (no consumer group). Every loop is bounded by a
deadline; a failure exits non-zero with a message on stderr."""

import argparse
import sys
import time


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--bootstrap", required=True, help="host:port of the Kafka listener")
    p.add_argument("--client", choices=["kafka", "confluent"], required=True)
    p.add_argument("--topic", required=True)
    return p


class Producer:
    """Produces with acks=all; `send` takes bytes or None keys and values."""

    def __init__(self, client, bootstrap, codec="none", idempotent=False, linger_ms=5):
        self.client = client
        self.errors = []
        self.acked = 0
        if client == "kafka":
            from kafka import KafkaProducer

            self.p = KafkaProducer(
                bootstrap_servers=bootstrap,
                acks="all",
                compression_type=None if codec == "none" else codec,
                enable_idempotence=idempotent,
                linger_ms=linger_ms,
                retries=1_000_000,
                retry_backoff_ms=100,
                request_timeout_ms=5000,
                delivery_timeout_ms=120_000,
                reconnect_backoff_max_ms=500,
                max_in_flight_requests_per_connection=5 if idempotent else 1,
            )
        else:
            from confluent_kafka import Producer as CProducer

            self.p = CProducer(
                {
                    "bootstrap.servers": bootstrap,
                    "acks": "all",
                    "compression.type": codec,
                    "enable.idempotence": idempotent,
                    "linger.ms": linger_ms,
                    "message.timeout.ms": 120_000,
                    "request.timeout.ms": 5000,
                    "reconnect.backoff.max.ms": 500,
                    "retry.backoff.ms": 100,
                }
            )

    def send(self, topic, value, key=None, headers=None, partition=0):
        headers = headers or []
        if self.client == "kafka":
            future = self.p.send(topic, value=value, key=key, headers=headers, partition=partition)
            future.add_callback(self._acked).add_errback(self.errors.append)
        else:
            self.p.produce(topic, value=value, key=key, headers=headers, partition=partition,
                           on_delivery=self._delivered)
            self.p.poll(0)

    def _acked(self, _metadata):
        self.acked += 1

    def _delivered(self, err, _msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.acked += 1

    def flush(self, timeout=120):
        if self.client == "kafka":
            self.p.flush(timeout=timeout)
            self.p.close(timeout=timeout)
        else:
            left = self.p.flush(timeout)
            if left:
                fail(f"{left} messages still unsent after {timeout} s")
        if self.errors:
            fail(f"delivery failed: {self.errors[:3]}")


def consume(client, bootstrap, topic, count, partition=0, timeout=60):
    """Reads `count` records of `topic`/`partition` from its beginning;
    returns them as (key, value, headers) tuples."""
    out = []
    deadline = time.monotonic() + timeout
    if client == "kafka":
        from kafka import KafkaConsumer, TopicPartition

        c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                          auto_offset_reset="earliest", consumer_timeout_ms=1000)
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        c.seek_to_beginning(tp)
        while len(out) < count and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=500).values():
                for r in records:
                    out.append((r.key, r.value, [(k, v) for k, v in (r.headers or [])]))
        c.close()
    else:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-assign-only",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        while len(out) < count and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                fail(f"consume error: {m.error()}")
            out.append((m.key(), m.value(), list(m.headers() or [])))
        c.close()
    if len(out) < count:
        fail(f"read {len(out)} of {count} records of {topic}/{partition} within {timeout} s")
    return out
