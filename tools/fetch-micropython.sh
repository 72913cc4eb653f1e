#!/usr/bin/env bash
# Fetch MicroPython 1.25.0 from Debian's source package (suite trixie), verify it by
# sha256 and unpack the upstream tarball into deps/micropython.
#
# The deb-src entry is derived from the mirror this machine's apt already uses, and
# apt runs with a private source list and state under deps/apt: the system's apt
# configuration is never touched.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
deps="$root/deps"
version="1.25.0+ds-1"
orig="micropython_1.25.0+ds.orig.tar.xz"
sha256="7b25be99a502f070b2de81dafc08da7051d992325d6e67daa9045a918fffdbea"
dest="$deps/micropython"

if [ -f "$dest/.sealink-fetched" ]; then
    exit 0
fi

mkdir -p "$deps/apt/lists/partial" "$deps/apt/archives"

# First "URIs:" (deb822) or "deb" line pointing at a Debian archive (not -security).
mirror=""
for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    m=$(awk '
        /^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }
        /^deb[ \t]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($i !~ /security/) { print $i; exit } } }
    ' "$f")
    if [ -n "$m" ]; then mirror=$m; break; fi
done
if [ -z "$mirror" ]; then
    echo "fetch-micropython: no Debian mirror found in the apt sources" >&2
    exit 1
fi
echo "fetch-micropython: using mirror $mirror"
echo "deb-src $mirror trixie main" > "$deps/apt/src.list"

apt_opts=(-o "Dir::Etc::SourceList=$deps/apt/src.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$deps/apt/lists" -o "Dir::Cache::Archives=$deps/apt/archives"
          -o APT::Sandbox::User=root)

if [ ! -f "$deps/apt/$orig" ]; then
    apt-get "${apt_opts[@]}" -q update
    (cd "$deps/apt" && apt-get "${apt_opts[@]}" -q source --download-only "micropython=$version")
fi
echo "$sha256  $deps/apt/$orig" | sha256sum -c --quiet -
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
tar -xJf "$deps/apt/$orig" -C "$dest.tmp" --strip-components=1
rm -rf "$dest"
mv "$dest.tmp" "$dest"
touch "$dest/.sealink-fetched"
echo "fetch-micropython: MicroPython 1.25.0 in $dest"
