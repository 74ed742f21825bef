"""An idempotent producer (enable.idempotence) writing values 0..COUNT-1 in
order to partition 0, printing `progress N` as acknowledgements arrive (the
test restarts the broker meanwhile); then, with --check, reads the
partition back and fails unless it holds exactly 0..COUNT-1, in order: no
duplicates, no gaps."""

import sys
import time

from common import Producer, consume, fail, parser

p = parser(__doc__)
p.add_argument("--count", type=int, default=2000)
p.add_argument("--check", action="store_true", help="only read back and check")
args = p.parse_args()

if not args.check:
    producer = Producer(args.client, args.bootstrap, idempotent=True, linger_ms=20)
    reported = 0
    for i in range(args.count):
        producer.send(args.topic, str(i).encode())
        if i % 50 == 49:
            # Pace the stream so the restart lands in the middle of it.
            time.sleep(0.05)
            if args.client == "confluent":
                producer.p.poll(0)
            if producer.acked >= reported + 100:
                reported = producer.acked
                print(f"progress {reported}", flush=True)
    producer.flush(timeout=150)
    print(f"OK acknowledged {producer.acked}", flush=True)
    sys.exit(0)

values = [int(v) for _k, v, _h in consume(args.client, args.bootstrap, args.topic, args.count, timeout=90)]
if values != list(range(args.count)):
    dups = len(values) - len(set(values))
    missing = sorted(set(range(args.count)) - set(values))[:10]
    fail(f"{dups} duplicates, missing {missing}, first wrong at "
         f"{next(i for i, (a, b) in enumerate(zip(values, range(args.count))) if a != b)}")
print(f"OK {args.count} exactly once, in order")
