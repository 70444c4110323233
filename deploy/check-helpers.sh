# Helpers shared by deploy/compose-check.sh and
# deploy/kubernetes/statefulset-check.sh (sourced, not run). The caller
# defines `url NODE PATH` (the node's HTTP URL) and `fail MESSAGE...`.

# Waits (at most $2 seconds) until command $1 succeeds.
until_ok() {
  local deadline=$((SECONDS + $2))
  until eval "$1" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

# Node $1 serves line $2 in a successful scrape. A scrape may be refused
# (503: an election, or the node cannot confirm it is up to date) and is then
# retried for a while; a successful scrape without the line is stale: fail.
serves() {
  local deadline=$((SECONDS + 20)) scrape code
  while ((SECONDS < deadline)); do
    scrape=$(curl -s --max-time 5 -w '\n%{http_code}' "$(url "$1" /metrics)") || { sleep 0.5; continue; }
    code=${scrape##*$'\n'}
    if [[ $code == 200 ]]; then
      grep -qxF "$2" <<<"$scrape" && return 0
      fail "node $1 answered a scrape without an acknowledged push: $2"
    fi
    echo "   node $1 refused a scrape ($code: $(head -c 200 <<<"${scrape%$'\n'*}")); retrying"
    sleep 0.5
  done
  fail "node $1 refused every scrape for 20 s (last status $code)"
}
