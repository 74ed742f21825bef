"""Captures the record batches librdkafka (confluent-kafka) puts in Produce
requests, one per codec, by playing a minimal Kafka broker on 127.0.0.1
(ApiVersions v0, Metadata v1, Produce v3-v7), and writes them as
librdkafka-<codec>.bin. How the checked-in files were made (confluent-kafka
2.16.1, librdkafka 2.16.0):

    pip install confluent-kafka
    python3 capture_librdkafka.py protocol/tests/data

librdkafka enables a codec only when the broker's ApiVersions allow it
(lz4 wants FindCoordinator, zstd Fetch v10 and Produce v7), so those are
advertised though never served. Notable: its snappy is one raw block (no
xerial framing) and its zstd frame records no content size. The Rust test
(protocol/tests/kafka_golden.rs) reads the files; it does not need Python.
"""
import socket, struct, threading, sys, os, time
from confluent_kafka import Producer

captured = {}

def s16(v): return struct.pack(">h", v)
def s32(v): return struct.pack(">i", v)
def s64(v): return struct.pack(">q", v)
def string(s): b = s.encode(); return s16(len(b)) + b

def read_exact(c, n):
    out = b""
    while len(out) < n:
        d = c.recv(n - len(out))
        if not d: raise EOFError
        out += d
    return out

def handle(c, port):
    try:
        while True:
            size = struct.unpack(">i", read_exact(c, 4))[0]
            req = read_exact(c, size)
            key, ver, corr = struct.unpack(">hhi", req[:8])
            if key == 18:  # ApiVersions: v0 response (KIP-511 fallback)
                apis = [(0, 0, 7), (1, 0, 10), (3, 0, 1), (10, 0, 0), (18, 0, 0)]
                body = s16(35 if ver > 0 else 0) + s32(len(apis)) + b"".join(s16(a) + s16(lo) + s16(hi) for a, lo, hi in apis)
            elif key == 3:  # Metadata v1
                # header: client_id nullable string
                pos = 8
                cl = struct.unpack(">h", req[pos:pos+2])[0]; pos += 2 + max(cl, 0)
                n = struct.unpack(">i", req[pos:pos+4])[0]; pos += 4
                topics = []
                for _ in range(max(n, 0)):
                    l = struct.unpack(">h", req[pos:pos+2])[0]; pos += 2
                    topics.append(req[pos:pos+l].decode()); pos += l
                body = s32(1) + s32(0) + string("127.0.0.1") + s32(port) + s16(-1) + s32(0)
                body += s32(len(topics))
                for t in topics:
                    body += s16(0) + string(t) + b"\x00" + s32(1) + s16(0) + s32(0) + s32(0) + s32(1) + s32(0) + s32(1) + s32(0)
            elif key == 0:  # Produce v3
                pos = 8
                cl = struct.unpack(">h", req[pos:pos+2])[0]; pos += 2 + max(cl, 0)
                tl = struct.unpack(">h", req[pos:pos+2])[0]; pos += 2 + max(tl, 0)  # transactional id
                pos += 2 + 4  # acks, timeout
                nt = struct.unpack(">i", req[pos:pos+4])[0]; pos += 4
                resp_topics = []
                for _ in range(nt):
                    l = struct.unpack(">h", req[pos:pos+2])[0]; pos += 2
                    t = req[pos:pos+l].decode(); pos += l
                    np_ = struct.unpack(">i", req[pos:pos+4])[0]; pos += 4
                    parts = []
                    for _ in range(np_):
                        p, rl = struct.unpack(">ii", req[pos:pos+8]); pos += 8
                        captured[t] = req[pos:pos+rl]; pos += rl
                        parts.append(p)
                    resp_topics.append((t, parts))
                body = s32(len(resp_topics))
                for t, parts in resp_topics:
                    body += string(t) + s32(len(parts))
                    for p in parts:
                        body += s32(p) + s16(0) + s64(0) + s64(-1) + (s64(0) if ver >= 5 else b"")
                body += s32(0)
            else:
                print("unexpected api", key, ver, file=sys.stderr)
                return
            out = s32(corr) + body
            c.sendall(s32(len(out)) + out)
    except EOFError:
        pass
    finally:
        c.close()

def main(out_dir):
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(8)
    port = srv.getsockname()[1]
    def accept():
        while True:
            try: c, _ = srv.accept()
            except OSError: return
            threading.Thread(target=handle, args=(c, port), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    value = b"sluice golden value " * 8
    for codec in ["gzip", "snappy", "lz4", "zstd", "none"]:
        p = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "compression.type": codec,
                      "linger.ms": 50, "enable.idempotence": False})
        topic = f"t-{codec}"
        for i in range(5):
            headers = [("h1", b"v1"), ("h2", None)] if i == 0 else []
            p.produce(topic, key=None if i == 1 else f"key-{i}".encode(),
                      value=None if i == 2 else value, headers=headers,
                      timestamp=1_700_000_000_000 + i)
        left = p.flush(20)
        assert left == 0, f"{codec}: {left} undelivered"
        with open(os.path.join(out_dir, f"librdkafka-{codec}.bin"), "wb") as f:
            f.write(captured[topic])
        print(codec, len(captured[topic]), "magic", captured[topic][16], "attrs", captured[topic][21:23].hex())
    srv.close()

main(sys.argv[1])
