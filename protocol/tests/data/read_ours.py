#!/usr/bin/env python3
"""One-off check that kafka-python reads the batches Sluice's builder writes:

    mkdir -p /tmp/ours && SLUICE_WRITE_GOLDEN_TO=/tmp/ours \
        cargo test -p sluice-protocol --test kafka_golden
    python3 protocol/tests/data/read_ours.py /tmp/ours

Each file's CRC is checked and its records compared with make_golden.py's.
"""
import os
import sys

from kafka.record.default_records import DefaultRecordBatch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden import CODECS, RECORDS  # noqa: E402

for name, codec in CODECS.items():
    with open(os.path.join(sys.argv[1], f"sluice-{name}.bin"), "rb") as f:
        batch = DefaultRecordBatch(f.read())
    assert batch.validate_crc(), name
    assert batch.compression_type == codec, name
    got = [(r.timestamp, r.key, r.value, [(k, v) for k, v in r.headers]) for r in batch]
    want = [(ts, k, v, list(h)) for ts, k, v, h in RECORDS]
    assert got == want, f"{name}: {got!r} != {want!r}"
    print(name, "ok")
