#!/usr/bin/env bash
# Launch a three-node cluster for the benchmark harness, in the foreground.
#
#   bench/cluster-launch.sh BIN DIR TARGET PORT PORT2 PORT3 PORT4 PORT5 PORT6
#
# TARGET=leader: node 1 (which bootstraps the cluster and leads it) serves
# HTTP on 127.0.0.1:PORT; TARGET=follower: node 2 does. The other nodes use
# PORT2/PORT3; PORT4-6 are the cluster (gRPC) ports. With NODE_CPUS set (for
# example 0.5), every node runs in a CPU budget of its own (bench/cpu-budget.sh).
# NODE_FLAGS (split on spaces) are added to every node's flags.
set -euo pipefail
BIN=$1 DIR=$2 TARGET=$3
shift 3
P=("$@")
if [[ $TARGET == leader ]]; then HTTP=(${P[0]} ${P[1]} ${P[2]}); else HTTP=(${P[1]} ${P[0]} ${P[2]}); fi
GRPC=(${P[3]} ${P[4]} ${P[5]})
PEERS="1=127.0.0.1:${GRPC[0]},2=127.0.0.1:${GRPC[1]},3=127.0.0.1:${GRPC[2]}"
PIDS=()
WRAP=()
if [[ -n ${NODE_CPUS:-} ]]; then WRAP=("$(dirname "$0")/cpu-budget.sh" "$NODE_CPUS"); fi
trap 'kill -TERM "${PIDS[@]}" 2>/dev/null; wait; exit 0' TERM INT
for i in 0 1 2; do
  "${WRAP[@]}" "$BIN" --cluster.node-id=$((i+1)) --cluster.peers="$PEERS" \
    --web.listen-address=127.0.0.1:${HTTP[$i]} --cluster.listen-address=127.0.0.1:${GRPC[$i]} \
    --storage.path="$DIR/node$((i+1))" ${NODE_FLAGS:-} > "$DIR/node$((i+1)).log" 2>&1 &
  PIDS+=($!)
done
wait -n "${PIDS[@]}"
kill -TERM "${PIDS[@]}" 2>/dev/null
wait
