#!/usr/bin/env bash
# Fetch libsodium 1.0.18's SHA-512 (Colin Percival's, as libsodium ships it) from
# Debian's source package (suite trixie), verify the upstream tarball by sha256 and copy
# the one source, the headers it includes and the licence to deps/libsodium.  The
# firmware's Ed25519 is Monocypher's EdDSA over this SHA-512 (firmware/usermod).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
deps="$root/deps"
orig="libsodium_1.0.18.orig.tar.gz"
dest="$deps/libsodium"

if [ -f "$dest/.sealink-fetched" ]; then
    exit 0
fi
bash "$root/tools/debian-source.sh" "libsodium=1.0.18-1+deb13u1" "$orig" \
    d59323c6b712a1519a5daf710b68f5e7fde57040845ffec53850911f10a5d4f4
src=libsodium-1.0.18/src/libsodium
files=(crypto_hash/sha512/cp/hash_sha512_cp.c include/sodium/crypto_hash_sha512.h
       include/sodium/export.h include/sodium/utils.h include/sodium/private/common.h)
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/unpacked"
tar -xzf "$deps/apt/$orig" -C "$dest.tmp/unpacked" libsodium-1.0.18/LICENSE \
    "${files[@]/#/$src/}"
for f in "${files[@]}"; do
    mkdir -p "$dest.tmp/$(dirname "$f")"
    mv "$dest.tmp/unpacked/$src/$f" "$dest.tmp/$f"
done
mv "$dest.tmp/unpacked/libsodium-1.0.18/LICENSE" "$dest.tmp/LICENSE"
rm -rf "$dest.tmp/unpacked" "$dest"
mv "$dest.tmp" "$dest"
touch "$dest/.sealink-fetched"
echo "fetch-libsodium: libsodium 1.0.18 SHA-512 in $dest"
