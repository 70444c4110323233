#!/usr/bin/env bash
# Runs every test of pushgate: unit and black-box tests (cargo test, against
# the real binary), then the Pushgateway conformance suite against the binary.
# Installs what it needs first (Python packages; Debian packages when root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${PUSHGATE_SHARED_DIR:-$ROOT/../shared}

log() { printf '\n== %s\n' "$*"; }

# ---- set-up ---------------------------------------------------------------
need_pkgs=()
command -v python3 >/dev/null || need_pkgs+=(python3 python3-pip)
command -v nginx >/dev/null || need_pkgs+=(nginx-light)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v nsenter >/dev/null || need_pkgs+=(util-linux)
# Certificates of deploy/local-cluster.sh --tls.
command -v openssl >/dev/null || need_pkgs+=(openssl)
# A C compiler, for the failing-sync library of tests/failing_disk.rs.
command -v cc >/dev/null || need_pkgs+=(gcc libc6-dev)
# The reference Pushgateway, for tests/reference_parity.rs.
command -v "${PUSHGATE_REFERENCE_BIN:-prometheus-pushgateway}" >/dev/null || need_pkgs+=(prometheus-pushgateway)
# A real Prometheus, for tests/prometheus.rs.
command -v "${PUSHGATE_PROMETHEUS_BIN:-prometheus}" >/dev/null || need_pkgs+=(prometheus)
if ((${#need_pkgs[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing ${need_pkgs[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "missing packages: ${need_pkgs[*]} (install them, or run as root to have this script do it)" >&2
  fi
fi
# The Kubernetes API schemas, to check deploy/kubernetes/pushgate.yaml offline.
python3 -c 'import kubernetes_validate' 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check 'kubernetes-validate==1.37.0'
if [[ -d $SHARED/conformance ]]; then
  python3 -c 'import pytest, requests, prometheus_client' 2>/dev/null ||
    python3 -m pip install -q --disable-pip-version-check -r "$SHARED/conformance/requirements.txt"
fi

# ---- the project's own tests -------------------------------------------------
log "cargo test (unit and black-box tests)"
# As root the disk tests (tests/disk_full.rs, small tmpfs disks in a private
# mount namespace) must run rather than skip.
if [[ $(id -u) == 0 ]]; then export PUSHGATE_TEST_NAMESPACES=required; fi
# Likewise the power-loss tests (tests/power_loss.rs), on a FUSE disk the
# test serves: they run wherever root has /dev/fuse.
if [[ $(id -u) == 0 && -c /dev/fuse ]]; then
  export PUSHGATE_TEST_FUSE=required
else
  echo "NOTE: no /dev/fuse or not root: tests/power_loss.rs will skip" >&2
fi
# The older releases tests/upgrade.rs upgrades from and rolls back to, built
# from this repository's history: the last of entry format 1 and the last of
# entry format 2. Only a checkout without that history (exit status 2) skips
# those tests; a failed build fails the run.
old_release() {
  local out status=0
  out=$(scripts/old-release.sh "$@") || status=$?
  if ((status == 0)); then
    echo "${out##*$'\n'}"
  elif ((status == 2)); then
    echo "NOTE: the older release ${1:-} is not in this checkout's history: tests/upgrade.rs will skip" >&2
  else
    echo "building the older release ${1:-} failed (scripts/old-release.sh, status $status)" >&2
    exit 1
  fi
}
OLD=$(old_release format-1) || exit 1
FORMAT_2=$(old_release format-2) || exit 1
if [[ -n $OLD && -n $FORMAT_2 ]]; then
  export PUSHGATE_OLD_RELEASE=$OLD PUSHGATE_FORMAT_2_RELEASE=$FORMAT_2 PUSHGATE_TEST_UPGRADE=required
fi
cargo test --release --workspace

# ---- the Kubernetes manifest ---------------------------------------------------
# No Kubernetes cluster here: check it against the API's schemas (strict: no
# unknown fields) for the oldest and newest versions the README names.
log "Kubernetes manifest against the API schemas (1.28 and 1.37)"
for version in 1.28.0 1.37.0; do
  python3 -m kubernetes_validate --strict --quiet -k "$version" deploy/kubernetes/pushgate.yaml
done

# ---- fault simulation (real nodes on turmoil hosts) -------------------------
log "fault simulation: the checker catches each deliberate bug (feature bug-injection)"
cargo test --release -p simulation --features bug-injection

log "fault simulation: every scenario, seeds 0..20"
cargo run --release -q -p simulation -- --seeds 0..20 --scenario all

# ---- conformance against the real binary -----------------------------------
if [[ -d $SHARED/conformance ]]; then
  # The binary `cargo test` built, wherever the target directory is
  # (CARGO_TARGET_DIR, .cargo/config.toml).
  TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  BIN=$TARGET_DIR/release/pushgate
  log "Pushgateway conformance suite against $BIN"
  cd "$SHARED"
  PGW_CMD="$BIN --web.listen-address=127.0.0.1:{port} --cluster.listen-address=127.0.0.1:0 --web.enable-admin-api --web.enable-lifecycle --storage.path={datadir}" \
    python3 -m pytest -q -p no:cacheprovider conformance -m 'not version_specific' --runxfail

  log "Pushgateway conformance suite through a round-robin nginx in front of a three-node cluster"
  PGW_CMD="$ROOT/deploy/local-cluster.sh --bin $BIN --nginx --port {port} --data {datadir} -- --web.enable-admin-api --web.enable-lifecycle" \
    python3 -m pytest -q -p no:cacheprovider conformance -m 'not version_specific' --runxfail

  log "Pushgateway conformance suite through nginx in front of a three-node cluster whose replicas talk mutual TLS"
  PGW_CMD="$ROOT/deploy/local-cluster.sh --bin $BIN --nginx --tls --port {port} --data {datadir} -- --web.enable-admin-api --web.enable-lifecycle" \
    python3 -m pytest -q -p no:cacheprovider conformance -m 'not version_specific' --runxfail
else
  echo "no conformance suite at $SHARED/conformance; skipped" >&2
fi

# ---- the Compose deployment: the image of deploy/Dockerfile in real containers --
# Builds the image (a release build inside Docker), starts deploy/compose.yaml
# as a project of its own, kills the leader's container and checks the
# survivors and the restarted node (deploy/compose-check.sh). A machine that
# cannot pull images gets its base images from deploy/base-images.sh.
if [[ ${PUSHGATE_SKIP_COMPOSE:-} == 1 ]]; then
  log "Compose deployment and StatefulSet pods: skipped (PUSHGATE_SKIP_COMPOSE=1)"
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  log "Compose deployment: three replicas in containers (deploy/compose-check.sh)"
  cd "$ROOT"
  deploy/base-images.sh
  deploy/compose-check.sh
  # The Kubernetes StatefulSet's pods, run from the manifest's own command
  # and args with their hostnames and DNS names: forming, scaling 3 -> 5 -> 3
  # and a deleted pod (the image is the one just built, from the cache).
  log "Kubernetes StatefulSet's pods in containers (deploy/kubernetes/statefulset-check.sh)"
  deploy/kubernetes/statefulset-check.sh
else
  log "Compose deployment and StatefulSet pods: skipped (no Docker daemon reachable)"
fi
