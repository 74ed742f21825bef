"""A consumer group of 3 sharing 6 partitions (run by
tests/tests/kafka_groups.rs): once the group has settled every record is
consumed exactly once; a member leaves and the other two take its
partitions over (still exactly once); the group stops, records arrive, and a
new group of 2 resumes at the committed offsets (nothing older re-read, every
newer record read). `--strategy` picks the client-side assignor (range,
roundrobin, cooperative-sticky); `--protocol consumer` uses KIP-848
(confluent-kafka only) instead of the classic protocol. Prints
`OK share CLIENT STRATEGY PROTOCOL` on success."""

import threading

from groups_common import group_parser, Member, create_topic, fail, log, produce, settled, wait_for

PARTITIONS = 6
TIMEOUT = 90


def strategy_for(client, name):
    if client == "confluent":
        return name
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    return [{"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor,
             "cooperative-sticky": CooperativeStickyAssignor}[name]]


def check_once(seen, values, what):
    missing = [v for v in values if v not in seen]
    twice = {v: who for v, who in seen.items() if len(who) > 1}
    extra = [v for v in seen if v not in values]
    if missing or twice or extra:
        fail(f"{what}: missing {missing[:10]} ({len(missing)}), read twice {list(twice.items())[:10]} "
             f"({len(twice)}), unexpected {extra[:10]}")


def check_errors(members):
    for m in members:
        if m.errors:
            fail(f"{m.name}: {m.errors[:3]}")


def main():
    p = group_parser(__doc__)
    p.add_argument("--strategy", default="range", choices=["range", "roundrobin", "cooperative-sticky"])
    p.add_argument("--protocol", default="classic", choices=["classic", "consumer"])
    a = p.parse_args()
    strategy = None if a.protocol == "consumer" else strategy_for(a.client, a.strategy)
    create_topic(a.client, a.bootstrap, a.topic, PARTITIONS)
    seen, lock = {}, threading.Lock()

    def member(name):
        return Member(name, a.client, a.bootstrap, a.group, a.topic, seen, lock, strategy, a.protocol)

    members = [member(f"m{i}") for i in range(3)]
    wait_for("3 members to share 6 partitions", lambda: settled(members, PARTITIONS)
             and all(len(m.assigned) == 2 for m in members), TIMEOUT)
    log(f"settled: {[sorted(m.assigned) for m in members]}")
    produce(a.client, a.bootstrap, a.topic, PARTITIONS, 0, 600)
    wait_for("600 records consumed", lambda: len(seen) >= 600, TIMEOUT)
    check_errors(members)
    check_once(seen, range(600), "a settled group of 3")

    leaver = members.pop()
    kept = {m.name: set(m.assigned) for m in members}
    leaver.close()
    wait_for("2 members to take over", lambda: settled(members, PARTITIONS), TIMEOUT)
    log(f"after a leave: {[sorted(m.assigned) for m in members]}")
    if a.strategy == "cooperative-sticky" or a.protocol == "consumer":
        for m in members:
            if not kept[m.name] <= m.assigned:
                fail(f"{m.name} lost partitions it had ({kept[m.name]} -> {m.assigned}): not sticky")
    produce(a.client, a.bootstrap, a.topic, PARTITIONS, 600, 300)
    wait_for("900 records consumed", lambda: len(seen) >= 900, TIMEOUT)
    check_errors(members)
    check_once(seen, range(900), "after a member left")
    for m in members:
        m.close()

    produce(a.client, a.bootstrap, a.topic, PARTITIONS, 900, 300)
    before = dict(seen)
    restarted = [member(f"r{i}") for i in range(2)]
    wait_for("the restarted group to read 300 new records", lambda: all(v in seen for v in range(900, 1200)),
             TIMEOUT)
    check_errors(restarted)
    reread = [v for v in range(900) if len(seen[v]) > len(before[v])]
    if reread:
        fail(f"the restarted group re-read committed records: {reread[:10]} ({len(reread)})")
    for m in restarted:
        m.close()
    print(f"OK share {a.client} {a.strategy} {a.protocol}", flush=True)


if __name__ == "__main__":
    main()
