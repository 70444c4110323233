#!/usr/bin/env bash
# Run a command inside a CPU budget of its own: a cgroup whose CFS quota lets
# the command and its children use at most CPUS cores (for example 0.5).
#
#   bench/cpu-budget.sh CPUS CMD [ARGS...]
#
# Why: on this shared 2-core machine three replicas of a cluster compete for
# the same cores, so "cluster vs single node" there measures three times the
# work on one machine, not what three machines would do. Giving every server
# process (the single node, and each node of the cluster) the same budget
# measures the cluster as if each replica ran on a machine of its own.
#
# Needs root and the cgroup v1 "cpu" controller (/sys/fs/cgroup/cpu) or a
# cgroup v2 hierarchy with the cpu controller enabled for new groups. The group
# is removed when the command exits; SIGTERM/SIGINT are passed to the command.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CPUS CMD [ARGS...]" >&2
  exit 2
fi
CPUS=$1
shift
PERIOD=100000
QUOTA=$(awk -v c="$CPUS" -v p="$PERIOD" 'BEGIN { q = int(c * p); if (q < 1000) exit 1; print q }') || {
  echo "cpu-budget: CPUS must be a number of cores of at least 0.01, got '$CPUS'" >&2
  exit 2
}

if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  ROOT=/sys/fs/cgroup
  GROUP=$ROOT/pushgate-bench-$$
  mkdir "$GROUP"
  if ! echo "$QUOTA $PERIOD" > "$GROUP/cpu.max" 2>/dev/null; then
    rmdir "$GROUP"
    echo "cpu-budget: the cgroup v2 cpu controller is not enabled in $ROOT/cgroup.subtree_control" >&2
    exit 1
  fi
elif [[ -d /sys/fs/cgroup/cpu ]]; then
  ROOT=/sys/fs/cgroup/cpu
  GROUP=$ROOT/pushgate-bench-$$
  mkdir "$GROUP"
  echo "$PERIOD" > "$GROUP/cpu.cfs_period_us"
  echo "$QUOTA" > "$GROUP/cpu.cfs_quota_us"
else
  echo "cpu-budget: no cgroup cpu controller found under /sys/fs/cgroup (needs root and cgroups)" >&2
  exit 1
fi

cleanup() {
  # A cgroup can be removed only once it holds no process: move this shell out first.
  echo $$ > "$ROOT/cgroup.procs" 2>/dev/null || true
  rmdir "$GROUP" 2>/dev/null || true
}
trap cleanup EXIT

echo $$ > "$GROUP/cgroup.procs"
"$@" &
CHILD=$!
trap 'kill -TERM "$CHILD" 2>/dev/null || true' TERM INT
# `wait` returns early when a trapped signal arrives; wait again until the child is gone.
status=0
while kill -0 "$CHILD" 2>/dev/null; do
  wait "$CHILD" && status=0 || status=$?
done
exit "$status"
