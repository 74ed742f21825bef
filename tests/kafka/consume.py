"""Reads COUNT records of partition 0 from the beginning and prints each
value on a line."""

from common import consume, parser

p = parser(__doc__)
p.add_argument("--count", type=int, required=True)
args = p.parse_args()
for _key, value, _headers in consume(args.client, args.bootstrap, args.topic, args.count):
    print(value.decode())
