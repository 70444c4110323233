#!/usr/bin/env bash
# Checks the Compose deployment end to end: builds the image from
# deploy/Dockerfile, starts deploy/compose.yaml as a project of its own on
# free host ports, and then
#   1. pushes through one node and scrapes every node;
#   2. kills the leader's container (SIGKILL) and pushes through a survivor
#      until a new leader acknowledges it;
#   3. starts the killed container again and waits until it serves both pushes.
# It removes its project (containers, network, volumes) when it ends, and
# touches nothing else.
#
#   deploy/compose-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
PROJECT=pushgate-check-$$
FILE=deploy/compose.yaml
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export PUSHGATE_PORT_1=$(free_port) PUSHGATE_PORT_2=$(free_port) PUSHGATE_PORT_3=$(free_port)
PORTS=("" "$PUSHGATE_PORT_1" "$PUSHGATE_PORT_2" "$PUSHGATE_PORT_3")
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$FILE" "$@"; }
UP_LOG=$(mktemp)
cleanup() { compose down -v --remove-orphans >/dev/null 2>&1 || true; rm -f "$UP_LOG"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; compose logs --no-color --tail 30 >&2 || true; exit 1; }
url() { echo "http://127.0.0.1:${PORTS[$1]}$2"; }
# until_ok, serves
source deploy/check-helpers.sh
leader() {
  local status
  for i in 1 2 3; do
    status=$(curl -sf --max-time 2 "$(url "$i" /api/v1/cluster/status)") || continue
    python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1])["data"]["state"] == "Leader" else 1)' "$status" &&
      { echo "$i"; return 0; }
  done
  return 1
}

# The commit the nodes report (the image is built without .git).
PUSHGATE_REVISION=${PUSHGATE_REVISION:-$(git -C "$(dirname "$0")/.." rev-parse --short=12 HEAD 2>/dev/null || true)}
export PUSHGATE_REVISION
echo "== building the image and starting $PROJECT (ports ${PORTS[*]:1})"
SECONDS_UP=$SECONDS
compose up -d --build >"$UP_LOG" 2>&1 || { tail -40 "$UP_LOG" >&2; fail "compose up (its last lines above)"; }
echo "   built and started in $((SECONDS - SECONDS_UP)) s"
for i in 1 2 3; do
  until_ok "curl -sf --max-time 2 $(url "$i" /-/ready)" 120 || fail "node $i not ready within 120 s"
done
echo "== 1. push through node 1, scrape every node"
curl -sf -X PUT --data-binary $'# TYPE check_one gauge\ncheck_one 1\n' "$(url 1 /metrics/job/compose-check)" || fail "push through node 1"
for i in 1 2 3; do
  serves "$i" 'check_one{instance="",job="compose-check"} 1'
done
echo "== 2. kill the leader's container, push through a survivor"
L=$(leader) || fail "no leader"
compose kill -s SIGKILL "pushgate-$L" >/dev/null 2>&1 || fail "kill pushgate-$L"
S=$(( L % 3 + 1 ))
until_ok "curl -sf --max-time 3 -X PUT --data-binary $'check_two 2\n' $(url "$S" /metrics/job/compose-check/step/two)" 15 ||
  fail "no push acknowledged through node $S within 15 s of killing node $L"
N=$(leader) || fail "no new leader"
echo "   node $L killed; node $N leads now"
echo "== 3. start node $L again; it serves both pushes"
compose start "pushgate-$L" >/dev/null 2>&1 || fail "start pushgate-$L"
until_ok "curl -sf --max-time 2 $(url "$L" /-/ready)" 60 || fail "node $L not ready again within 60 s"
serves "$L" 'check_one{instance="",job="compose-check"} 1'
serves "$L" 'check_two{instance="",job="compose-check",step="two"} 2'
echo "OK: the Compose cluster formed, survived its leader's SIGKILL and caught up"
