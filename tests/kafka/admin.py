"""Topic administration through a Kafka admin client: create (with a
config), describe, alter a config, add partitions, delete."""

import time

from common import fail, parser

p = parser(__doc__)
args = p.parse_args()
t = args.topic

if args.client == "kafka":
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic

    a = KafkaAdminClient(bootstrap_servers=args.bootstrap, request_timeout_ms=10000)
    a.create_topics([NewTopic(t, 2, 1, topic_configs={"retention.ms": "3600000", "fsync": "never"})])
    if t not in a.list_topics():
        fail(f"{t} not listed after create")
    described = a.describe_topics([t])[0]
    if len(described["partitions"]) != 2:
        fail(f"describe: {described}")

    def configs():
        res = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t)])
        return {k: v["value"] for k, v in res["topic"][t].items()} if isinstance(res, dict) else \
            {c[0]: c[1] for c in res[0].resources[0][4]}

    if configs().get("retention.ms") != "3600000":
        fail(f"configs after create: {configs()}")
    a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t, configs={"retention.ms": "7200000"})])
    if configs().get("retention.ms") != "7200000":
        fail(f"configs after alter: {configs()}")
    a.create_partitions({t: NewPartitions(4)})
    if len(a.describe_topics([t])[0]["partitions"]) != 4:
        fail("partitions not added")
    a.delete_topics([t])
    if t in a.list_topics():
        fail(f"{t} still listed after delete")
    a.close()
else:
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                       NewPartitions, NewTopic)

    a = AdminClient({"bootstrap.servers": args.bootstrap})
    for f in a.create_topics([NewTopic(t, 2, 1, config={"retention.ms": "3600000", "fsync": "never"})]).values():
        f.result(30)
    md = a.list_topics(timeout=10)
    if t not in md.topics or len(md.topics[t].partitions) != 2:
        fail(f"after create: {md.topics}")
    res = ConfigResource("topic", t)

    def configs():
        return {k: e.value for f in a.describe_configs([res]).values() for k, e in f.result(30).items()}

    if configs().get("retention.ms") != "3600000" or configs().get("fsync") != "never":
        fail(f"configs after create: {configs()}")
    change = ConfigResource("topic", t, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)])
    for f in a.incremental_alter_configs([change]).values():
        f.result(30)
    if configs().get("retention.ms") != "7200000":
        fail(f"configs after alter: {configs()}")
    for f in a.create_partitions([NewPartitions(t, 4)]).values():
        f.result(30)
    if len(a.list_topics(timeout=10).topics[t].partitions) != 4:
        fail("partitions not added")
    cluster = a.describe_cluster().result(30)
    if len(cluster.nodes) != 1:
        fail(f"describe cluster: {cluster.nodes}")
    for f in a.delete_topics([t]).values():
        f.result(30)
    deadline = time.monotonic() + 10
    while t in a.list_topics(timeout=10).topics:
        if time.monotonic() > deadline:
            fail(f"{t} still listed after delete")
        time.sleep(0.1)
print(f"OK admin {args.client}")
