#!/usr/bin/env bash
# Runs the StatefulSet of deploy/kubernetes/pushgate.yaml the way Kubernetes
# would, with Docker instead of a Kubernetes cluster (none is reachable from
# the build machine): every pod is a container of the manifest's image that
# runs the manifest's own command and args, with the pod's hostname
# (pushgate-N, so the node id comes from the ordinal as in the manifest), the
# DNS name the headless Service gives it (pushgate-N.pushgate-peers), a volume
# of its own, and readiness read from the manifest's readinessProbe. Then:
#   1. the three pods start at once (podManagementPolicy: Parallel) and become
#      ready; a push through pod 0 is served by every pod;
#   2. scale 3 -> 5: pods 3 and 4 start with the same args, wait to be added
#      (not ready) and are added with `pushgate cluster add` (kubectl exec),
#      node 4 run inside pod 0, node 5 as `pushgate cluster add` without
#      arguments inside its own pod 4 (it adds itself; the pod passes the
#      change on to the cluster it waits for); a push through pod 4 is served
#      by pod 0;
#   3. a pod is deleted and re-created on its volume (kubectl delete pod): it
#      is ready again and serves every push; then it loses its volume: it
#      refuses to rejoin as the member it was, its id is removed from pod 0,
#      and it adds itself back under the same id (`cluster add` in the pod);
#   4. scale 5 -> 3: nodes 5 and 4 are removed, their pods and volumes
#      deleted; the three voters take and serve a push.
#   5. a majority lost for good: pods 1 and 2 and their volumes are deleted
#      (pod 0 stops being ready: no quorum); scaled to 0, pod 0's volume is
#      recovered by `pushgate cluster recover --force` in a one-off container
#      of the image; scaled back to 3, pod 0 serves alone every earlier push
#      and pods 1 and 2, on new volumes, add themselves (`cluster add`).
# What it does not show: the Kubernetes objects themselves (Services,
# probes' timing, the PodDisruptionBudget), which scripts/test.sh checks
# against the API schemas only.
#
# Membership changes need --web.enable-admin-api, which the manifest leaves
# off (it also enables the wipe endpoint for every client of the Service):
# the check appends it to the args, as the README's scaling steps say.
#
# It removes what it made (containers, network, volumes, all named
# pushgate-sts-<pid>-*) when it ends, and touches nothing else.
#
#   deploy/kubernetes/statefulset-check.sh      (builds the image first)
set -euo pipefail
cd "$(dirname "$0")/../.."
MANIFEST=deploy/kubernetes/pushgate.yaml
P=pushgate-sts-$$
NET=$P-net

# The StatefulSet's pod template, read from the manifest.
eval "$(python3 - "$MANIFEST" <<'EOF'
import shlex, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
sts = next(d for d in docs if d["kind"] == "StatefulSet")
spec = sts["spec"]
pod = spec["template"]["spec"]
(c,) = pod["containers"]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
probe = c["readinessProbe"]["httpGet"]
port = probe["port"]
(mount,) = c["volumeMounts"]
out = {
    "NAME": sts["metadata"]["name"],
    "SERVICE": spec["serviceName"],
    "REPLICAS": spec["replicas"],
    "IMAGE": c["image"],
    "READY_PATH": probe["path"],
    "HTTP_PORT": ports.get(port, port),
    "CLUSTER_PORT": ports["cluster"],
    "DATA_PATH": mount["mountPath"],
}
for k, v in out.items():
    print(f"{k}={shlex.quote(str(v))}")
command = c.get("command", [])
print("ENTRYPOINT=" + shlex.quote(command[0] if command else ""))
print("ARGS=(" + " ".join(shlex.quote(a) for a in command[1:] + c.get("args", [])) + ")")
EOF
)"
[[ -n $ENTRYPOINT ]] || { echo "FAIL: the manifest's container has no command" >&2; exit 1; }
ARGS[${#ARGS[@]}-1]+=" --web.enable-admin-api"

cleanup() {
  docker rm -f $(docker ps -aq --filter "name=^$P-") >/dev/null 2>&1 || true
  docker network rm "$NET" >/dev/null 2>&1 || true
  docker volume rm $(docker volume ls -q --filter "name=^$P-") >/dev/null 2>&1 || true
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for c in $(docker ps -aq --filter "name=^$P-"); do
    echo "--- $(docker inspect -f '{{.Name}}' "$c") (last lines)" >&2
    docker logs --tail 15 "$c" >&2 2>&1 || true
  done
  exit 1
}
pod() { echo "$P-$NAME-$1"; }
# The host port the pod's HTTP port is published on.
port_of() { docker port "$(pod "$1")" "$HTTP_PORT/tcp" | head -1 | sed 's/.*://'; }
url() { echo "http://127.0.0.1:$(port_of "$1")$2"; }
ready() { curl -sf --max-time 3 -o /dev/null "$(url "$1" "$READY_PATH")"; }
# until_ok, serves (a node there is a pod ordinal here)
source deploy/check-helpers.sh
# Starts pod $1 (an ordinal) as Kubernetes would: hostname, the headless
# Service's DNS name, its own volume, the manifest's command and args.
start_pod() {
  docker run -d --name "$(pod "$1")" --hostname "$NAME-$1" \
    --network "$NET" --network-alias "$NAME-$1.$SERVICE" \
    -v "$P-data-$NAME-$1:$DATA_PATH" -p "127.0.0.1::$HTTP_PORT" \
    --entrypoint "$ENTRYPOINT" "$IMAGE" "${ARGS[@]}" >/dev/null || fail "start pod $NAME-$1"
}
delete_pod() { docker rm -f "$(pod "$1")" >/dev/null; }
push() { # ordinal, path, body
  until_ok "curl -sf --max-time 5 -X PUT --data-binary '$3' $(url "$1" "$2")" 15 || fail "push $2 through pod $1"
}
voters() {
  curl -sf --max-time 5 "$(url 0 /api/v1/cluster/status)" |
    python3 -c 'import json,sys; print(",".join(map(str, json.load(sys.stdin)["data"]["voters"])))'
}
cluster() { # ordinal of the pod to exec in, then the subcommand's arguments
  local in=$1
  shift
  docker exec "$(pod "$in")" /usr/local/bin/pushgate cluster "$@"
}

PUSHGATE_REVISION=${PUSHGATE_REVISION:-$(git rev-parse --short=12 HEAD 2>/dev/null || true)}
echo "== building $IMAGE from deploy/Dockerfile"
BUILD_LOG=$(mktemp)
docker build -f deploy/Dockerfile -t "$IMAGE" --build-arg "PUSHGATE_REVISION=$PUSHGATE_REVISION" . >"$BUILD_LOG" 2>&1 ||
  { tail -40 "$BUILD_LOG" >&2; rm -f "$BUILD_LOG"; fail "docker build (its last lines above)"; }
rm -f "$BUILD_LOG"
docker network create "$NET" >/dev/null

echo "== 1. $REPLICAS pods at once; a push through pod 0 is served by every pod"
for ((i = 0; i < REPLICAS; i++)); do start_pod "$i"; done
for ((i = 0; i < REPLICAS; i++)); do
  until_ok "ready $i" 120 || fail "pod $i not ready within 120 s"
done
[[ $(voters) == 1,2,3 ]] || fail "voters $(voters), not 1,2,3"
push 0 /metrics/job/sts-check $'sts_one 1\n'
for ((i = 0; i < REPLICAS; i++)); do serves "$i" 'sts_one{instance="",job="sts-check"} 1'; done

echo "== 2. scale to 5: pods 3 and 4 wait to be added; pod 3 is added through pod 0, pod 4 through itself"
for i in 3 4; do
  start_pod "$i"
  until_ok "docker logs $(pod "$i") 2>&1 | grep -q 'waiting to be added'" 30 ||
    fail "pod $i does not say it waits to be added"
  ! ready "$i" || fail "pod $i is ready before it was added"
  if ((i == 4)); then # in the new pod: adds the pod it runs in
    cluster 4 add >/dev/null || fail "cluster add (no arguments) in pod 4"
  else
    cluster 0 add --node-id $((i + 1)) --address "$NAME-$i.$SERVICE:$CLUSTER_PORT" >/dev/null ||
      fail "cluster add --node-id $((i + 1)) in pod 0"
  fi
  until_ok "ready $i" 60 || fail "pod $i not ready within 60 s of being added"
done
[[ $(voters) == 1,2,3,4,5 ]] || fail "voters $(voters), not 1,2,3,4,5"
push 4 /metrics/job/sts-check/step/two $'sts_two 2\n'
serves 0 'sts_two{instance="",job="sts-check",step="two"} 2'
serves 3 'sts_one{instance="",job="sts-check"} 1'

echo "== 3. delete pod 1; re-created on its volume it serves every push; on a new volume it is removed and added back"
delete_pod 1
push 2 /metrics/job/sts-check/step/three $'sts_three 3\n'
start_pod 1
until_ok "ready 1" 60 || fail "pod 1 not ready within 60 s of being re-created"
serves 1 'sts_three{instance="",job="sts-check",step="three"} 3'
serves 1 'sts_two{instance="",job="sts-check",step="two"} 2'
delete_pod 1
docker volume rm "$P-data-$NAME-1" >/dev/null
start_pod 1
until_ok "docker logs $(pod 1) 2>&1 | grep -q 'its disk was lost'" 30 || fail "pod 1 on a new volume does not say its disk was lost"
cluster 0 remove --node-id 2 >/dev/null || fail "cluster remove --node-id 2"
until_ok "docker logs $(pod 1) 2>&1 | grep -q 'waiting to be added'" 30 || fail "pod 1 does not wait to be added once removed"
cluster 1 add >/dev/null || fail "cluster add (no arguments) in pod 1"
until_ok "ready 1" 60 || fail "pod 1 not ready within 60 s of being added back"
serves 1 'sts_three{instance="",job="sts-check",step="three"} 3'

echo "== 4. scale to 3: remove nodes 5 and 4, delete their pods and volumes"
for i in 4 3; do
  cluster 0 remove --node-id $((i + 1)) >/dev/null || fail "cluster remove --node-id $((i + 1))"
  delete_pod "$i"
  docker volume rm "$P-data-$NAME-$i" >/dev/null
done
[[ $(voters) == 1,2,3 ]] || fail "voters $(voters), not 1,2,3"
push 2 /metrics/job/sts-check/step/four $'sts_four 4\n'
for ((i = 0; i < REPLICAS; i++)); do serves "$i" 'sts_four{instance="",job="sts-check",step="four"} 4'; done

echo "== 5. a majority lost for good: pods 1 and 2 and their volumes go; pod 0 is recovered, 1 and 2 added back"
for i in 1 2; do
  delete_pod "$i"
  docker volume rm "$P-data-$NAME-$i" >/dev/null
done
until_ok "! ready 0" 20 || fail "pod 0 is still ready without a quorum"
delete_pod 0 # kubectl scale --replicas=0: recovery works on a stopped node
docker run --rm -v "$P-data-$NAME-0:$DATA_PATH" --entrypoint /usr/local/bin/pushgate "$IMAGE" \
  cluster recover --storage.path="$DATA_PATH" --force >/dev/null || fail "cluster recover on pod 0's volume"
for ((i = 0; i < REPLICAS; i++)); do start_pod "$i"; done # kubectl scale --replicas=3
until_ok "ready 0" 60 || fail "pod 0 not ready within 60 s of its recovery"
[[ $(voters) == 1 ]] || fail "voters $(voters) after the recovery, not 1"
serves 0 'sts_four{instance="",job="sts-check",step="four"} 4'
for i in 1 2; do
  until_ok "docker logs $(pod "$i") 2>&1 | grep -q 'waiting to be added'" 30 ||
    fail "pod $i does not say it waits to be added"
  cluster "$i" add >/dev/null || fail "cluster add (no arguments) in pod $i"
  until_ok "ready $i" 60 || fail "pod $i not ready within 60 s of being added"
done
[[ $(voters) == 1,2,3 ]] || fail "voters $(voters), not 1,2,3"
push 1 /metrics/job/sts-check/step/five $'sts_five 5\n'
for ((i = 0; i < REPLICAS; i++)); do
  serves "$i" 'sts_five{instance="",job="sts-check",step="five"} 5'
  serves "$i" 'sts_one{instance="",job="sts-check"} 1'
done
echo "OK: the StatefulSet's pods formed a cluster, scaled to 5 and back to 3, a deleted pod caught up, a pod that lost its volume came back under its id, and a lost majority was recovered"
