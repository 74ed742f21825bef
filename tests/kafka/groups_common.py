"""Consumer-group helpers of the Kafka group scripts (run by
tests/tests/kafka_groups.rs): a group member running in its own thread over
kafka-python (`kafka`) or confluent-kafka (`confluent`), topic creation and
keyed production. Every loop is bounded by a deadline; a failure exits
non-zero with a message on stderr."""

import argparse
import sys
import threading
import time


def group_parser(description):
    """The arguments every group scenario takes; scenarios add their own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--client", choices=["kafka", "confluent"], required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    return p


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def log(message):
    print(message, file=sys.stderr, flush=True)


def create_topic(client, bootstrap, topic, partitions):
    if client == "kafka":
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(topic, partitions, 1)])
        admin.close()
    else:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": bootstrap})
        for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
            f.result(30)


def produce(client, bootstrap, topic, partitions, first, count):
    """Produces values `first..first+count` (as text), value i to partition
    i % partitions, acks=all; waits for every acknowledgement."""
    if client == "kafka":
        from kafka import KafkaProducer

        p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        futures = [p.send(topic, value=str(i).encode(), partition=i % partitions)
                   for i in range(first, first + count)]
        for f in futures:
            f.get(timeout=60)
        p.close(timeout=60)
    else:
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
        errors = []
        for i in range(first, first + count):
            p.produce(topic, value=str(i).encode(), partition=i % partitions,
                      on_delivery=lambda e, _m: e and errors.append(e))
            p.poll(0)
        if p.flush(60):
            fail("produce: messages left unsent")
        if errors:
            fail(f"produce: {errors[:3]}")


class Member:
    """One consumer of a group, polling in its own thread and committing
    after every batch it handles. `seen` (shared, with `lock`) maps each
    value read to the members that read it."""

    # Every member started (wait_for reports their errors at once).
    started = []

    def __init__(self, name, client, bootstrap, group, topic, seen, lock, strategy=None, protocol=None):
        self.name, self.client, self.topic = name, client, topic
        self.seen, self.lock = seen, lock
        self.assigned = set()
        self.assign_events = []
        self.errors = []
        self.commit_failures = []
        self.stopping = threading.Event()
        self.closed = threading.Event()
        if client == "kafka":
            from kafka import KafkaConsumer

            kwargs = {}
            if strategy is not None:
                kwargs["partition_assignment_strategy"] = strategy
            self.c = KafkaConsumer(
                bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=300,
                max_poll_interval_ms=30000, **kwargs)
            self.c.subscribe([topic])
        else:
            from confluent_kafka import Consumer

            config = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest"}
            if protocol == "consumer":
                config["group.protocol"] = "consumer"
            else:
                config.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 300})
                if strategy is not None:
                    config["partition.assignment.strategy"] = strategy
            self.c = Consumer(config)
            self.c.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        Member.started.append(self)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    # confluent-kafka (un)assigns by itself after these callbacks return,
    # eagerly or incrementally as the protocol says.
    def _on_assign(self, _consumer, partitions):
        self.assign_events.append(("assign", sorted(p.partition for p in partitions)))

    def _on_revoke(self, consumer, partitions):
        self.assign_events.append(("revoke", sorted(p.partition for p in partitions)))
        try:
            consumer.commit(asynchronous=False)
        except Exception:  # nothing to commit
            pass

    def _record(self, values):
        with self.lock:
            for v in values:
                self.seen.setdefault(v, []).append(self.name)

    def _commit(self, commit):
        """A commit refused because the group rebalances meanwhile is not
        fatal: those records may be read again by their next owner (the
        scripts test exactly-once only where the group is settled)."""
        try:
            commit()
        except Exception as e:
            self.commit_failures.append(repr(e))

    def _run(self):
        try:
            while not self.stopping.is_set():
                if self.client == "kafka":
                    batches = self.c.poll(timeout_ms=100)
                    values = [int(r.value) for rs in batches.values() for r in rs]
                    if values:
                        self._record(values)
                        self._commit(self.c.commit)
                    self.assigned = {tp.partition for tp in self.c.assignment()}
                else:
                    m = self.c.poll(0.1)
                    if m is not None and m.error() is None:
                        self._record([int(m.value())])
                        self._commit(lambda: self.c.commit(message=m, asynchronous=False))
                    elif m is not None:
                        self.errors.append(str(m.error()))
                    self.assigned = {tp.partition for tp in self.c.assignment()}
        except Exception as e:  # reported by the main thread
            self.errors.append(repr(e))
        finally:
            self.c.close()
            self.closed.set()

    def close(self, timeout=30):
        """Leaves the group (close commits nothing more: every batch was
        committed as it was handled)."""
        self.stopping.set()
        if not self.closed.wait(timeout):
            fail(f"{self.name} did not close within {timeout} s")
        self.thread.join(timeout)


def wait_for(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        failed = [(m.name, m.errors) for m in Member.started if m.errors]
        if failed:
            fail(f"waiting for {what}: a member failed: {failed}")
        time.sleep(0.05)
    fail(f"timed out after {timeout} s waiting for {what}")


def settled(members, partitions):
    """Every partition is held by exactly one of `members`."""
    held = [p for m in members for p in m.assigned]
    return sorted(held) == list(range(partitions))
