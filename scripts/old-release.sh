#!/usr/bin/env bash
# Builds the pushgate binary of an older release from this repository's
# history, for tests/upgrade.rs (a rolling upgrade from it, and a roll-back
# to it), and prints the binary's path on its last line.
#
#   scripts/old-release.sh [format-1 | format-2 | COMMIT]
#
# format-1 (the default) is the last commit whose pushgate writes and applies
# only log entry format 1 (the one before forwarded pushes carried request
# ids, entry format 2); format-2 the last one before entry format 3 (an empty
# protobuf HELP kept). There are no tagged releases yet; when there are,
# these become the newest tag of each entry format before this build's.
#
# The source comes from `git archive` (no work tree, nothing in .git
# changes); it is built with its own Cargo.lock (--locked) in its own target
# directory under this checkout's, and the binary is kept there, so a second
# run builds nothing. Needs the crates of that Cargo.lock (the registry or
# cargo's cache).
set -euo pipefail
cd "$(dirname "$0")/.."

case ${1:-format-1} in
  format-1) COMMIT=c6ad81bc9b555d49ac81085994a6f0cb0a780152 ;;
  format-2) COMMIT=e97de7d175761144919ac132e39e91a66f43e0e3 ;;
  *) COMMIT=$1 ;;
esac
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
OUT=$TARGET_DIR/old-releases/$COMMIT
BIN=$OUT/pushgate

if [[ -x $BIN ]]; then
  echo "$BIN"
  exit 0
fi
if ! git cat-file -e "$COMMIT^{commit}" 2>/dev/null; then
  echo "old-release.sh: commit $COMMIT is not in this checkout's history (a shallow clone?)" >&2
  exit 2
fi

rm -rf "$OUT/src"
mkdir -p "$OUT/src"
git archive "$COMMIT" | tar -x -C "$OUT/src"
echo "old-release.sh: building pushgate at ${COMMIT:0:12} in $OUT (a release build, a few minutes the first time)" >&2
START=$(date +%s)
(
  cd "$OUT/src"
  PUSHGATE_REVISION=${COMMIT:0:12} CARGO_TARGET_DIR=$OUT/target cargo build --release --locked --quiet --bin pushgate
)
cp "$OUT/target/release/pushgate" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
# The binary is all the tests need: drop the intermediate build (about 0.9 GB).
rm -rf "$OUT/src" "$OUT/target"
echo "old-release.sh: built in $(($(date +%s) - START)) s" >&2
echo "$BIN"
