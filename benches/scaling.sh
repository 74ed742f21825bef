#!/usr/bin/env bash
# The scaling table of docs/benchmarks.md: produce and consume with 1, 2, 4
# and 8 actors over as many partitions, then the same produce split over
# processes; each row the median of RUNS runs with the spread, msgs/s and
# CPU-seconds per million records of the broker and of the clients.
#
#   cargo build --release -p sluice-benches --bin sluice-bench
#   benches/scaling.sh [MESSAGES] [RUNS]      # defaults: 1000000 3
#
# Every run starts its own broker on a temporary directory (loopback only),
# 100 B records, acks=leader, fsync=never.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${SLUICE_BENCH:-target/release/sluice-bench}
messages=${1:-1000000}
runs=${2:-3}
common=(--messages "$messages" --message-size 100 --acks leader --fsync never --json)

row() { # label, then sluice-bench arguments
    local label=$1
    shift
    for _ in $(seq "$runs"); do "$bench" "$@" "${common[@]}"; done |
        python3 -c '
import json, statistics, sys
label = sys.argv[1]
rs = [json.loads(line) for line in sys.stdin]
def col(get, fmt):
    xs = sorted(x for x in map(get, rs) if x is not None)
    if not xs:
        return "unknown"
    return f"{fmt(statistics.median(xs))} ({fmt(xs[0])}-{fmt(xs[-1])})"
mps = lambda x: f"{x / 1e6:.2f}M"
cpu = lambda x: f"{x:.3f}"
threads = rs[0]["parameters"]["client_threads"]
rate = col(lambda r: r["msgs_per_sec"], mps)
broker = col(lambda r: r["cpu_s_per_million"]["broker"], cpu)
clients = col(lambda r: r["cpu_s_per_million"]["clients"], cpu)
print(f"| {label} | {threads} | {rate} | {broker} | {clients} |")
' "$label"
}

echo "| run | client threads (per process) | msgs/s median (spread) | broker CPU-s per M | clients CPU-s per M |"
echo "|---|---|---|---|---|"
for n in 1 2 4 8; do
    row "produce, $n producer(s), $n partition(s)" produce --producers "$n" --partitions "$n"
done
for n in 1 2 4 8; do
    row "consume, $n consumer(s), $n partition(s)" consume --consumers "$n" --partitions "$n"
done
for n in 2 4 8; do
    row "produce, --processes $n, 1 producer each" produce --processes "$n"
done
