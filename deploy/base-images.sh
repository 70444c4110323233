#!/usr/bin/env bash
# Builds, on a machine that cannot pull images, the two base images that
# deploy/Dockerfile names, so that the standard Dockerfile and compose file
# work there unchanged:
#
#   debian:bookworm-slim  Debian bookworm (minbase), by debootstrap from
#                         Debian's package mirror
#   rust:1-bookworm       the same plus gcc and libc6-dev, with the Rust
#                         toolchain this machine builds with (`rustc --print
#                         sysroot`) in /usr/local/rust, trusting the
#                         certificate authorities this machine adds in
#                         /usr/local/share/ca-certificates
#
# An image that already exists (pulled, or built by an earlier run) is kept,
# and one that can be pulled is pulled; nothing else is touched. Building
# needs root (debootstrap) and a running Docker daemon; debootstrap is
# installed from Debian's packages if it is missing.
#
#   deploy/base-images.sh [--mirror URL]
set -euo pipefail
MIRROR=http://deb.debian.org/debian
while (($#)); do
  case $1 in
    --mirror) MIRROR=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

have() { docker image inspect "$1" >/dev/null 2>&1; }
# A machine that reaches a registry pulls the real images instead.
for image in debian:bookworm-slim rust:1-bookworm; do
  have "$image" || timeout 600 docker pull -q "$image" >/dev/null 2>&1 || true
done
if have debian:bookworm-slim && have rust:1-bookworm; then
  echo "base images: debian:bookworm-slim and rust:1-bookworm exist"
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "base images: building them needs root (debootstrap); missing:" \
    "$(have debian:bookworm-slim || printf 'debian:bookworm-slim ')$(have rust:1-bookworm || printf 'rust:1-bookworm')" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  echo "base images: installing debootstrap"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

WORK=$(mktemp -d /tmp/pushgate-base-images.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# Debian bookworm into $1, with the extra packages $2 (comma separated), and
# without the package cache (as Debian's own images).
bootstrap() {
  local root=$1 include=$2 started=$SECONDS
  echo "base images: debootstrap bookworm${include:+ with $include} (about a minute)"
  if ! debootstrap --variant=minbase ${include:+--include="$include"} bookworm "$root" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1; then
    tail -20 "$WORK/debootstrap.log" >&2
    echo "base images: debootstrap failed (log above)" >&2
    exit 1
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  echo "base images: bootstrapped in $((SECONDS - started)) s"
}

PATH_IN_IMAGE=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

if ! have debian:bookworm-slim; then
  bootstrap "$WORK/slim" ""
  tar -C "$WORK/slim" -c . |
    docker import -c "ENV PATH=$PATH_IN_IMAGE" -c 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
  rm -rf "$WORK/slim"
  echo "base images: debian:bookworm-slim built"
fi

if ! have rust:1-bookworm; then
  SYSROOT=$(rustc --print sysroot)
  bootstrap "$WORK/rust" "ca-certificates,gcc,libc6-dev"
  # The toolchain without its documentation (share/), as the official image.
  mkdir -p "$WORK/rust/usr/local/rust" "$WORK/rust/usr/local/cargo"
  tar -C "$SYSROOT" --exclude=./share -c . | tar -C "$WORK/rust/usr/local/rust" -x
  # The build stage fetches crates: trust the certificate authorities this
  # machine trusts beyond Debian's (a TLS-inspecting egress proxy, say).
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$WORK/rust/usr/local/share/ca-certificates/"
    chroot "$WORK/rust" update-ca-certificates >/dev/null 2>&1
  fi
  tar -C "$WORK/rust" -c . |
    docker import \
      -c "ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:$PATH_IN_IMAGE" \
      -c 'ENV CARGO_HOME=/usr/local/cargo' \
      -c 'CMD ["bash"]' - rust:1-bookworm >/dev/null
  echo "base images: rust:1-bookworm built ($("$SYSROOT/bin/rustc" --version))"
fi
