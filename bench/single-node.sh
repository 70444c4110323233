#!/usr/bin/env bash
# Benchmarks of one durable pushgate node, side by side with the reference
# Pushgateway in the same run (ratios are what to read: the machine is shared).
#
#   bench/single-node.sh [OUT_DIR]
#
# Needs: prometheus-pushgateway, wrk, curl, python3 (apt-get install -y
# prometheus-pushgateway wrk curl), the harness in ../shared/bench, and a
# release build (cargo build --release). Takes about 25 minutes, most of it
# preloading the reference (its pushes slow down as its store grows).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HARNESS=${PUSHGATE_BENCH_HARNESS:-$ROOT/../shared/bench}
OUT=${1:-$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
BIN=$OUT/pushgate
cp "$ROOT/target/release/pushgate" "$BIN"   # a fixed copy: rebuilding during the run changes nothing
PG='prometheus-pushgateway --web.listen-address=127.0.0.1:{port} --persistence.file='
RS="$BIN --web.listen-address=127.0.0.1:{port} --storage.path={dir}/data"
export LABEL_A=reference LABEL_B=pushgate

echo "== 1. durable pushes, 64 connections, PUT of 33 series to 1,000 existing groups" >&2
OUT_DIR=$OUT/push PHASES=push PUSH_GROUPS=1000 PUSH_CONC=64 WORKLOADS=push_put REPS=3 DUR=10 \
  "$HARNESS/compare.sh" "$PG" "$RS" > "$OUT/push.txt"

echo "== 2. the same with 10,000 groups stored (pushgate only: preloading the reference takes 30-40 min)" >&2
OUT_DIR=$OUT/push10k PHASES=push PUSH_GROUPS=10000 PUSH_CONC=64 WORKLOADS=push_put REPS=3 DUR=10 \
  "$HARNESS/run.sh" "$RS" pushgate > "$OUT/push10k.txt"

echo "== 3. /metrics with 500k series, plain and gzip" >&2
OUT_DIR=$OUT/scale PHASES=scale SCALE_STEPS=500000 SCALE_SPG=500 SCALE_WORKLOADS="scrape scrape_gz" REPS=3 \
  "$HARNESS/compare.sh" "$PG" "$RS" > "$OUT/scale.txt"

echo "== 4. /metrics while pushes keep arriving (500k series store, 16 pushers, 1 scraper)" >&2
OUT_DIR=$OUT/mixed PHASES=store STORE_SPECS=1000x500 WORKLOADS="mixed" REPS=3 \
  "$HARNESS/compare.sh" "$PG" "$RS" > "$OUT/mixed.txt"

echo "== 5. memory per series, restart-to-ready, fsyncs/s, data directory after 1M pushes" >&2
python3 "$ROOT/bench/durability.py" --pushgate "$BIN" --reference prometheus-pushgateway > "$OUT/durability.jsonl"
echo "results in $OUT" >&2
