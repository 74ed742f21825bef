"""A member that dies without leaving (run by tests/tests/kafka_groups.rs):
a group of 3 shares 4 partitions, one member runs in a child process that is
killed (SIGKILL: no LeaveGroup); after its session timeout the broker
removes it and the two others take its partitions over and read what is
produced next. Prints `OK expiry CLIENT` on success."""

import os
import signal
import subprocess
import sys
import threading
import time

from groups_common import group_parser, Member, create_topic, fail, log, produce, settled, wait_for

PARTITIONS = 4
TIMEOUT = 90


def main():
    p = group_parser(__doc__)
    p.add_argument("--child", action="store_true", help="run one member until killed")
    a = p.parse_args()
    seen, lock = {}, threading.Lock()
    if a.child:
        Member("child", a.client, a.bootstrap, a.group, a.topic, seen, lock)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            time.sleep(0.1)
        return
    create_topic(a.client, a.bootstrap, a.topic, PARTITIONS)
    members = [Member(f"m{i}", a.client, a.bootstrap, a.group, a.topic, seen, lock) for i in range(2)]
    child = subprocess.Popen([sys.executable, __file__, "--child", "--client", a.client, "--bootstrap",
                              a.bootstrap, "--topic", a.topic, "--group", a.group])
    try:
        wait_for("the child to hold partitions", lambda: len([q for m in members for q in m.assigned]) < PARTITIONS
                 and all(m.assigned for m in members), TIMEOUT)
        log(f"with the child: {[sorted(m.assigned) for m in members]}")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        started = time.monotonic()
        wait_for("the others to take the dead member's partitions", lambda: settled(members, PARTITIONS), TIMEOUT)
        log(f"after {time.monotonic() - started:.1f} s: {[sorted(m.assigned) for m in members]}")
        produce(a.client, a.bootstrap, a.topic, PARTITIONS, 0, 200)
        wait_for("200 records", lambda: all(v in seen for v in range(200)), TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
    for m in members:
        if m.errors:
            fail(f"{m.name}: {m.errors[:3]}")
        m.close()
    print(f"OK expiry {a.client}", flush=True)


if __name__ == "__main__":
    main()
