#!/usr/bin/env python3
"""Writes the golden record batches in this directory with kafka-python's own
batch builder (magic 2), one file per codec: kafka-python-<codec>.bin.

How they were made (kafka-python 3.0.12, python-snappy 0.7.3, lz4 4.4.5,
zstandard 0.25.0):

    pip install kafka-python python-snappy lz4 zstandard crc32c
    python3 make_golden.py

The Rust test (protocol/tests/kafka_golden.rs) reads the checked-in files; it
does not need Python. The inputs below are repeated there: keep them in step.
Values repeat so that every codec actually compresses (kafka-python sends a
batch uncompressed when compression does not make it smaller).
"""
import os

from kafka.record.default_records import DefaultRecordBatchBuilder

BASE_TS = 1_700_000_000_000
VALUE = b"sluice golden value " * 8
RECORDS = [
    # (timestamp, key, value, headers)
    (BASE_TS, b"key-0", VALUE, [("h1", b"v1"), ("h2", None)]),
    (BASE_TS + 5, None, VALUE, []),
    (BASE_TS + 3, b"key-2", None, [("trace", b"abc")]),
    (BASE_TS + 1000, b"", b"", []),
    (BASE_TS + 7, b"key-4", VALUE + b"!", [("a", b""), ("b", b"x" * 40)]),
]
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
PRODUCER_ID, PRODUCER_EPOCH, BASE_SEQUENCE = 4242, 3, 17


def build(codec):
    b = DefaultRecordBatchBuilder(
        magic=2, compression_type=codec, is_transactional=False,
        producer_id=PRODUCER_ID, producer_epoch=PRODUCER_EPOCH,
        base_sequence=BASE_SEQUENCE, batch_size=1 << 20)
    for offset, (ts, key, value, headers) in enumerate(RECORDS):
        assert b.append(offset, timestamp=ts, key=key, value=value, headers=headers) is not None
    return bytes(b.build())


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    for name, codec in CODECS.items():
        data = build(codec)
        assert data[22] & 0x07 == codec, f"{name}: kafka-python sent it uncompressed"
        with open(os.path.join(here, f"kafka-python-{name}.bin"), "wb") as f:
            f.write(data)
        print(name, len(data))
