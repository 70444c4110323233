#!/usr/bin/env bash
# Benchmarks of a three-node pushgate cluster, in the same runs as a single
# node and the reference (ratios are what to read: the machine is shared).
#
#   bench/cluster.sh [OUT_DIR]          (STEPS="5 6" bench/cluster.sh runs only those steps)
#
# Durable pushes/s and p99 with 32 concurrent pushers (PUT, 33 series, 1,000
# groups stored), pushing to the leader and to a follower; scrape latency of
# /metrics on a follower against the leader. All three nodes run on this one
# 2-core machine, so a cluster here pays three times the CPU of one node.
# Steps 5 and 6 repeat steps 1 and 2 with every server process in a CPU budget of its own
# (NODE_CPUS cores each, default 0.5; bench/cpu-budget.sh, needs root and
# cgroups): the cluster as three machines of equal size would run it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HARNESS=${PUSHGATE_BENCH_HARNESS:-$ROOT/../shared/bench}
OUT=${1:-$ROOT/bench/results/cluster-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
BIN=$OUT/pushgate
cp "$ROOT/target/release/pushgate" "$BIN"
PG='prometheus-pushgateway --web.listen-address=127.0.0.1:{port} --persistence.file='
ONE="$BIN --web.listen-address=127.0.0.1:{port} --storage.path={dir}/data"
LEADER="$ROOT/bench/cluster-launch.sh $BIN {dir} leader {port} {port2} {port3} {port4} {port5} {port6}"
FOLLOWER="$ROOT/bench/cluster-launch.sh $BIN {dir} follower {port} {port2} {port3} {port4} {port5} {port6}"
NODE_CPUS=${NODE_CPUS:-0.5}
STEPS=" ${STEPS:-1 2 3 4 5 6} "
step() { [[ $STEPS == *" $1 "* ]]; }
PUSH=(PHASES=push PUSH_GROUPS=1000 PUSH_CONC=32 WORKLOADS=push_put REPS=3 DUR=10)

if step 1; then
  echo "== 1. single node vs 3-node cluster (pushing to the leader)" >&2
  env "${PUSH[@]}" OUT_DIR=$OUT/one-vs-leader LABEL_A=single LABEL_B=cluster_leader \
    "$HARNESS/compare.sh" "$ONE" "$LEADER" > "$OUT/one-vs-leader.txt"
fi
if step 2; then
  echo "== 2. pushing to the leader vs to a follower" >&2
  env "${PUSH[@]}" OUT_DIR=$OUT/leader-vs-follower LABEL_A=cluster_leader LABEL_B=cluster_follower \
    "$HARNESS/compare.sh" "$LEADER" "$FOLLOWER" > "$OUT/leader-vs-follower.txt"
fi
if step 3; then
  echo "== 3. reference vs 3-node cluster (pushing to a follower)" >&2
  env "${PUSH[@]}" OUT_DIR=$OUT/reference-vs-follower LABEL_A=reference LABEL_B=cluster_follower \
    "$HARNESS/compare.sh" "$PG" "$FOLLOWER" > "$OUT/reference-vs-follower.txt"
fi
if step 4; then
  echo "== 4. scrape latency: leader vs follower (1,000 groups x 50 series)" >&2
  OUT_DIR=$OUT/scrape PHASES=store STORE_SPECS=1000x50 WORKLOADS="scrape scrape_gz" REPS=3 LABEL_A=cluster_leader LABEL_B=cluster_follower \
    "$HARNESS/compare.sh" "$LEADER" "$FOLLOWER" > "$OUT/scrape.txt"
fi
if step 5; then
  echo "== 5. single node vs 3-node cluster (leader), every node limited to $NODE_CPUS CPU" >&2
  env "${PUSH[@]}" OUT_DIR=$OUT/budget-one-vs-leader LABEL_A=single_budget LABEL_B=cluster_leader_budget \
    "$HARNESS/compare.sh" "$ROOT/bench/cpu-budget.sh $NODE_CPUS $ONE" "env NODE_CPUS=$NODE_CPUS $LEADER" \
    > "$OUT/budget-one-vs-leader.txt"
fi
if step 6; then
  echo "== 6. the same, pushing to a follower" >&2
  env "${PUSH[@]}" OUT_DIR=$OUT/budget-one-vs-follower LABEL_A=single_budget LABEL_B=cluster_follower_budget \
    "$HARNESS/compare.sh" "$ROOT/bench/cpu-budget.sh $NODE_CPUS $ONE" "env NODE_CPUS=$NODE_CPUS $FOLLOWER" \
    > "$OUT/budget-one-vs-follower.txt"
fi
echo "results in $OUT" >&2
