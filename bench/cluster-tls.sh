#!/usr/bin/env bash
# What mutual TLS between replicas (--cluster.tls.*) costs: a three-node
# cluster without and with it, side by side in one run (../shared/bench/
# compare.sh, runs alternated), pushing through the leader and then through
# a follower (whose forwarded pushes also cross TLS). Read the ratios: the
# machine is shared.
#
#   bench/cluster-tls.sh [OUT_DIR]
#
# Needs: wrk, openssl, python3, the harness in ../shared/bench and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HARNESS=${PUSHGATE_BENCH_HARNESS:-$ROOT/../shared/bench}
OUT=${1:-$ROOT/bench/results/cluster-tls-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
cp "$ROOT/target/release/pushgate" "$OUT/pushgate"

# One CA, one certificate for 127.0.0.1 shared by the three nodes.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$OUT/ca.key" -out "$OUT/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=node \
  -keyout "$OUT/node.key" -out "$OUT/node.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > "$OUT/node.ext"
openssl x509 -req -in "$OUT/node.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" -CAcreateserial -days 2 \
  -extfile "$OUT/node.ext" -out "$OUT/node.crt" 2>/dev/null
TLS="--cluster.tls.cert-file=$OUT/node.crt --cluster.tls.key-file=$OUT/node.key --cluster.tls.ca-file=$OUT/ca.crt"

for target in leader follower; do
  LAUNCH="$ROOT/bench/cluster-launch.sh $OUT/pushgate {dir} $target {port} {port2} {port3} {port4} {port5} {port6}"
  OUT_DIR="$OUT/$target" REPS=${REPS:-3} DUR=${DUR:-10} PHASES=push PUSH_GROUPS=1000 PUSH_CONC=32 \
    WORKLOADS=push_put LABEL_A=plain_$target LABEL_B=tls_$target \
    "$HARNESS/compare.sh" "$LAUNCH" "env NODE_FLAGS='$TLS' $LAUNCH"
done
echo "results: $OUT"
