#!/usr/bin/env bash
# What HTTPS (tls_server_config) costs, side by side with the reference
# Pushgateway in the same run: pushes over kept-alive connections, each
# server over plain HTTP and over HTTPS, runs alternated
# (REPS rounds, DUR seconds each), CONC connections pushing to PUSH_GROUPS groups
# (few: the reference checks each push against its whole store, so with many
# groups its store, not TLS, is what is measured). Read the ratios: the
# machine is shared.
#
#   bench/https.sh [OUT_DIR]
#
# Needs: prometheus-pushgateway, wrk, openssl, python3, the harness's wrk
# scripts in ../shared/bench/lua, and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LUA=${PUSHGATE_BENCH_HARNESS:-$ROOT/../shared/bench}/lua/push.lua
OUT=${1:-$ROOT/bench/results/https-$(date +%Y%m%d-%H%M%S)}
REPS=${REPS:-3} DUR=${DUR:-10} CONC=${CONC:-32} PUSH_GROUPS=${PUSH_GROUPS:-20}
mkdir -p "$OUT"
cp "$ROOT/target/release/pushgate" "$OUT/pushgate"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$OUT/server.key" -out "$OUT/server.crt" 2>/dev/null
printf 'tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n' > "$OUT/web.yml"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A URL PID
start() { # name scheme command...
  local name=$1 scheme=$2; shift 2
  "$@" > "$OUT/$name.log" 2>&1 &
  PID[$name]=$!
  URL[$name]="$scheme://127.0.0.1:$PORT"
}
stop_all() { for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop_all EXIT

PORT=$(free_port); start reference-http http prometheus-pushgateway --web.listen-address=127.0.0.1:$PORT --persistence.file=
PORT=$(free_port); start reference-https https prometheus-pushgateway --web.listen-address=127.0.0.1:$PORT --persistence.file= \
  --web.config.file="$OUT/web.yml"
for tls in http https; do
  PORT=$(free_port); CPORT=$(free_port)
  flags=(--web.listen-address=127.0.0.1:$PORT --cluster.listen-address=127.0.0.1:$CPORT --storage.path="$OUT/data-$tls")
  [[ $tls == https ]] && flags+=(--web.config.file="$OUT/web.yml")
  start "pushgate-$tls" "$tls" "$OUT/pushgate" "${flags[@]}"
done
NAMES=(reference-http reference-https pushgate-http pushgate-https)
for n in "${NAMES[@]}"; do
  for _ in $(seq 100); do curl -skf "${URL[$n]}/-/ready" > /dev/null && break; sleep 0.1; done
  curl -skf "${URL[$n]}/-/ready" > /dev/null || { echo "$n did not start: $(tail -3 "$OUT/$n.log")" >&2; exit 1; }
done

# run NAME CASE -> "requests/s p99_ms non_2xx". (A handshake per push is not
# measured: the harness's script sets its own headers, so wrk -H "Connection:
# close" is not sent and wrk keeps its connections.)
run() {
  BENCH_GROUPS="$PUSH_GROUPS" BENCH_PREFIX="bench-$2" wrk -t1 -c"$CONC" -d"${DUR}s" --latency -s "$LUA" \
    "${URL[$1]}" 2>&1 | tee -a "$OUT/wrk.txt" | python3 -c '
import re, sys
t = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)", t)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(rps, p99, errors.group(1) if errors else 0)'
}

echo "case server rep requests_per_s p99_ms non_2xx" > "$OUT/runs.txt"
for rep in $(seq "$REPS"); do
  for c in keepalive; do
    for n in "${NAMES[@]}"; do
      echo "$c $n $rep $(run "$n" "$c")" | tee -a "$OUT/runs.txt" >&2
    done
  done
done

python3 - "$OUT/runs.txt" <<'PY' | tee "$OUT/summary.txt"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
med = {}
for c, n, _, rps, p99, _ in rows:
    med.setdefault((c, n), ([], []))
    med[(c, n)][0].append(float(rps)); med[(c, n)][1].append(float(p99))
print(f"{'case':10} {'server':16} {'pushes/s':>9} {'p99 ms':>8}   medians of the runs")
for (c, n), (r, p) in med.items():
    print(f"{c:10} {n:16} {statistics.median(r):9.0f} {statistics.median(p):8.2f}")
print()
for c in ("keepalive",):
    g = lambda n, i: statistics.median(med[(c, n)][i])
    print(f"{c}: HTTPS/HTTP pushes/s  reference {g('reference-https',0)/g('reference-http',0):.2f}"
          f"  pushgate {g('pushgate-https',0)/g('pushgate-http',0):.2f}")
    print(f"{c}: pushgate/reference over HTTPS  pushes/s {g('pushgate-https',0)/g('reference-https',0):.2f}"
          f"  p99 {g('pushgate-https',1)/g('reference-https',1):.2f}")
PY
