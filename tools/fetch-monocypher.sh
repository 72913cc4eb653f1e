#!/usr/bin/env bash
# Fetch Monocypher 4.0.3 (monocypher.c/.h) from the sdist of PyPI pymonocypher==4.0.3.4,
# verify the sdist by sha256 and copy the two sources and the licence to deps/monocypher.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
deps="$root/deps"
sdist="pymonocypher-4.0.3.4.tar.gz"
sha256="5e56e3d3eb770a53e0b9f6274146663c11a11f3d0de5cd48e3be0428d1b07a4a"
dest="$deps/monocypher"
python=${PYTHON:-python3}

if [ -f "$dest/.sealink-fetched" ]; then
    exit 0
fi
mkdir -p "$deps/dl"
if [ ! -f "$deps/dl/$sdist" ]; then
    # The sdist's address comes from the package index (PEP 691 JSON); nothing of the
    # package is built or run.  PIP_INDEX_URL selects another index, as for pip.
    "$python" - "$deps/dl" "$sdist" <<'PY'
import json, os, sys, urllib.request
dest, name = sys.argv[1], sys.argv[2]
index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
req = urllib.request.Request(index + "/pymonocypher/",
                             headers={"Accept": "application/vnd.pypi.simple.v1+json"})
with urllib.request.urlopen(req, timeout=60) as r:
    files = json.load(r)["files"]
url = next(f["url"] for f in files if f["filename"] == name)
with urllib.request.urlopen(url, timeout=120) as r, open(os.path.join(dest, name + ".part"), "wb") as out:
    out.write(r.read())
os.replace(os.path.join(dest, name + ".part"), os.path.join(dest, name))
PY
fi
if [ ! -f "$deps/dl/$sdist" ]; then
    echo "fetch-monocypher: could not download $sdist from PyPI" >&2
    exit 1
fi
echo "$sha256  $deps/dl/$sdist" | sha256sum -c --quiet -
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
tar -xzf "$deps/dl/$sdist" -C "$dest.tmp" --strip-components=1 \
    pymonocypher-4.0.3.4/monocypher.c pymonocypher-4.0.3.4/monocypher.h \
    pymonocypher-4.0.3.4/LICENSE.txt
rm -rf "$dest"
mv "$dest.tmp" "$dest"
touch "$dest/.sealink-fetched"
echo "fetch-monocypher: Monocypher 4.0.3 in $dest"
