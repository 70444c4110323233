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

# push_compare NAME LABEL_A LABEL_B CMD_A CMD_B: the push workload, A against B.
push_compare() {
  env "${PUSH[@]}" OUT_DIR="$OUT/$1" LABEL_A="$2" LABEL_B="$3" "$HARNESS/compare.sh" "$4" "$5" > "$OUT/$1.txt"
}
ONE_BUDGET="$ROOT/bench/cpu-budget.sh $NODE_CPUS $ONE"

if step 1; then
  echo "== 1. single node vs 3-node cluster (pushing to the leader)" >&2
  push_compare one-vs-leader single cluster_leader "$ONE" "$LEADER"
fi
if step 2; then
  echo "== 2. pushing to the leader vs to a follower" >&2
  push_compare leader-vs-follower cluster_leader cluster_follower "$LEADER" "$FOLLOWER"
fi
if step 3; then
  echo "== 3. reference vs 3-node cluster (pushing to a follower)" >&2
  push_compare reference-vs-follower reference cluster_follower "$PG" "$FOLLOWER"
fi
if step 4; then
  echo "== 4. scrape latency: leader vs follower (1,000 groups x 50 series)" >&2
  OUT_DIR=$OUT/scrape PHASES=store STORE_SPECS=1000x50 WORKLOADS="scrape scrape_gz" REPS=3 LABEL_A=cluster_leader LABEL_B=cluster_follower \
    "$HARNESS/compare.sh" "$LEADER" "$FOLLOWER" > "$OUT/scrape.txt"
fi
if step 5; then
  echo "== 5. single node vs 3-node cluster (leader), every node limited to $NODE_CPUS CPU" >&2
  push_compare budget-one-vs-leader single_budget cluster_leader_budget "$ONE_BUDGET" "env NODE_CPUS=$NODE_CPUS $LEADER"
fi
if step 6; then
  echo "== 6. the same, pushing to a follower" >&2
  push_compare budget-one-vs-follower single_budget cluster_follower_budget "$ONE_BUDGET" "env NODE_CPUS=$NODE_CPUS $FOLLOWER"
fi
echo "results in $OUT" >&2
