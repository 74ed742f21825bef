"""Produces the values given on the command line (keys k0, k1, ...) to
partition 0, acks=all, then exits 0 once every one is acknowledged."""

from common import Producer, parser

p = parser(__doc__)
p.add_argument("--codec", default="none", choices=["none", "gzip", "snappy", "lz4", "zstd"])
p.add_argument("values", nargs="+")
args = p.parse_args()
producer = Producer(args.client, args.bootstrap, codec=args.codec)
for i, v in enumerate(args.values):
    producer.send(args.topic, v.encode(), key=f"k{i}".encode())
producer.flush()
print(f"OK produced {len(args.values)}")
