#!/usr/bin/env bash
# Download one file of a Debian source package (suite trixie) into deps/apt and check it
# by sha256:   tools/debian-source.sh PACKAGE=VERSION FILE SHA256
#
# The deb-src entry is derived from the mirror this machine's apt already uses, and apt
# runs with a private source list and state under deps/apt: the system's apt
# configuration is never touched.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
deps="$root/deps"
spec=$1 file=$2 sha256=$3

mkdir -p "$deps/apt/lists/partial" "$deps/apt/archives"
if [ ! -f "$deps/apt/$file" ]; then
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
        echo "debian-source: no Debian mirror found in the apt sources" >&2
        exit 1
    fi
    echo "debian-source: $spec from $mirror"
    echo "deb-src $mirror trixie main" > "$deps/apt/src.list"
    apt_opts=(-o "Dir::Etc::SourceList=$deps/apt/src.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$deps/apt/lists" -o "Dir::Cache::Archives=$deps/apt/archives"
              -o APT::Sandbox::User=root)
    apt-get "${apt_opts[@]}" -q update
    (cd "$deps/apt" && apt-get "${apt_opts[@]}" -q source --download-only "$spec")
fi
echo "$sha256  $deps/apt/$file" | sha256sum -c --quiet -
