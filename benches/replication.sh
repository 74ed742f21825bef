#!/usr/bin/env bash
# RF=3 vs RF=1 durable produce on a 3-node cluster on loopback, alternating
# rounds (docs/benchmarks.md, "Replication"). Ports 9501-9503 and 9601-9603:
# run it in a private network namespace so nothing else holds them:
#   cargo build --release -p sluice-broker -p sluice-benches
#   sudo unshare -n bash benches/replication.sh        # N=3000000 ROUNDS="1 2 3 4 5"
# Every run is bounded: N messages or 60 s each.
set -u
ip link set lo up
B=${B:-target/release/sluice}; BENCH=${BENCH:-target/release/sluice-bench}
D=$(mktemp -d /tmp/rfbench.XXXX)
PEERS=1=127.0.0.1:9601,2=127.0.0.1:9602,3=127.0.0.1:9603
for i in 1 2 3; do $B serve --node-id $i --listen 127.0.0.1:950$i --kafka-listen "" --admin-listen "" --peer-listen 127.0.0.1:960$i --peers $PEERS --data-dir $D/n$i > $D/n$i.log 2>&1 & echo $! > $D/n$i.pid; done
BR=127.0.0.1:9501,127.0.0.1:9502,127.0.0.1:9503
for i in $(seq 200); do [ "$($B cluster status --broker $BR 2>/dev/null | grep -c ' live ')" = 3 ] && break; sleep 0.1; done
$B topic create rf3 --partitions 1 --replication-factor 3 --broker $BR
$B topic create rf1 --partitions 1 --replication-factor 1 --broker $BR
$B topic describe rf3 --broker $BR | tail -1; $B topic describe rf1 --broker $BR | tail -1
N=${N:-1000000}
for round in ${ROUNDS:-1 2 3}; do
  for t in rf1 rf3; do
    $BENCH produce --broker 127.0.0.1:9501 --topic $t --messages $N --message-size 100 --acks durable --duration 60 --json 2>$D/$t.$round.err > $D/$t.$round.json || tail -3 $D/$t.$round.err
    python3 -c "import json; d=json.load(open('$D/$t.$round.json')); print('$t', 'round $round', round(d['msgs_per_sec']), 'msgs/s, p50', d['latency_us']['p50'], 'us, p99', d['latency_us']['p99'], 'us')"
  done
done
for i in 1 2 3; do kill $(cat $D/n$i.pid); done; sleep 1; rm -rf $D
