#!/usr/bin/env bash
# Apply Sealink's patches (firmware/patches/<port>/*.patch, in name order) to a
# MicroPython source tree.  Idempotent: a patch that is already applied is skipped,
# one that neither applies nor is applied stops the build.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mpy=${1:-$root/deps/micropython}

for patch in "$root"/firmware/patches/*/*.patch; do
    name=${patch#"$root"/firmware/patches/}
    if patch -d "$mpy" -p1 -R --dry-run --force --silent <"$patch" >/dev/null 2>&1; then
        echo "apply-patches: $name already applied"
    elif patch -d "$mpy" -p1 --dry-run --force --silent <"$patch" >/dev/null 2>&1; then
        patch -d "$mpy" -p1 --force --silent --no-backup-if-mismatch <"$patch"
        echo "apply-patches: $name applied"
    else
        echo "apply-patches: $name does not apply to $mpy" >&2
        exit 1
    fi
done
touch "$mpy/.sealink-patched"
