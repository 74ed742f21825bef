"""Produce then consume round trip with keys, headers and a compression
codec: every record comes back with its key, value and headers, in order."""

from common import Producer, consume, fail, parser

p = parser(__doc__)
p.add_argument("--codec", default="none", choices=["none", "gzip", "snappy", "lz4", "zstd"])
p.add_argument("--count", type=int, default=200)
args = p.parse_args()

producer = Producer(args.client, args.bootstrap, codec=args.codec)
sent = []
for i in range(args.count):
    key = None if i % 10 == 0 else f"key-{i}".encode()
    value = (f"value-{i}-" + "x" * (i % 50)).encode()
    headers = [("n", str(i).encode()), ("codec", args.codec.encode())] if i % 3 else []
    producer.send(args.topic, value, key=key, headers=headers)
    sent.append((key, value, headers))
producer.flush()

got = consume(args.client, args.bootstrap, args.topic, args.count)
for i, (want, have) in enumerate(zip(sent, got)):
    if want[0] != have[0] or want[1] != have[1]:
        fail(f"record {i}: sent {want[:2]}, read {have[:2]}")
    if [(k, bytes(v)) for k, v in want[2]] != [(k, bytes(v)) for k, v in have[2]]:
        fail(f"record {i}: sent headers {want[2]}, read {have[2]}")
print(f"OK {args.client} {args.codec} {args.count}")
