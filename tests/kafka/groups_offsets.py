"""Committed offsets shared by Kafka and native groups (run by
tests/tests/kafka_groups.rs). `--mode commit` creates a 2-partition topic,
writes 20 records to each partition and commits offsets 7 and 11 for the
group from a Kafka consumer outside any generation (a "simple" commit);
`--mode fetch` prints the group's committed offsets as Kafka's OffsetFetch
reads them, one `COMMITTED PARTITION OFFSET` line per partition (-1: none)."""


from groups_common import group_parser, create_topic, produce

COMMITS = {0: 7, 1: 11}


def consumer(client, bootstrap, group):
    if client == "kafka":
        from kafka import KafkaConsumer

        return KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    from confluent_kafka import Consumer

    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})


def commit(a):
    create_topic(a.client, a.bootstrap, a.topic, 2)
    produce(a.client, a.bootstrap, a.topic, 2, 0, 40)
    c = consumer(a.client, a.bootstrap, a.group)
    if a.client == "kafka":
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        c.commit({TopicPartition(a.topic, p): OffsetAndMetadata(o, "kafka", -1) for p, o in COMMITS.items()})
    else:
        from confluent_kafka import TopicPartition

        c.commit(offsets=[TopicPartition(a.topic, p, o) for p, o in COMMITS.items()], asynchronous=False)
    c.close()
    print("OK commit", flush=True)


def fetch(a):
    c = consumer(a.client, a.bootstrap, a.group)
    if a.client == "kafka":
        from kafka import TopicPartition

        for p in (0, 1):
            o = c.committed(TopicPartition(a.topic, p))
            print(f"COMMITTED {p} {-1 if o is None else o}", flush=True)
    else:
        from confluent_kafka import TopicPartition

        for tp in c.committed([TopicPartition(a.topic, p) for p in (0, 1)], timeout=30):
            print(f"COMMITTED {tp.partition} {tp.offset if tp.offset >= 0 else -1}", flush=True)
    c.close()


def main():
    p = group_parser(__doc__)
    p.add_argument("--mode", choices=["commit", "fetch"], required=True)
    a = p.parse_args()
    commit(a) if a.mode == "commit" else fetch(a)


if __name__ == "__main__":
    main()
