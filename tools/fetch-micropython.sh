#!/usr/bin/env bash
# Fetch MicroPython 1.25.0 from Debian's source package (suite trixie), verify it by
# sha256 and unpack the upstream tarball into deps/micropython.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
deps="$root/deps"
orig="micropython_1.25.0+ds.orig.tar.xz"
dest="$deps/micropython"

if [ -f "$dest/.sealink-fetched" ]; then
    exit 0
fi
bash "$root/tools/debian-source.sh" "micropython=1.25.0+ds-1" "$orig" \
    7b25be99a502f070b2de81dafc08da7051d992325d6e67daa9045a918fffdbea
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
tar -xJf "$deps/apt/$orig" -C "$dest.tmp" --strip-components=1
rm -rf "$dest"
mv "$dest.tmp" "$dest"
touch "$dest/.sealink-fetched"
echo "fetch-micropython: MicroPython 1.25.0 in $dest"
