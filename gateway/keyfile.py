"""Files that hold secrets (the gateway's static key, the authority's signing key) are
private to their owner: created with mode 0600, and refused when anyone else may read
or write them."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class KeyFileError(ValueError):
    """A key file that must not be used; the message says which file and why."""


def require_private(path: Path) -> None:
    """Raise KeyFileError unless `path` is a regular file only its owner can access."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise KeyFileError(f"{path} has mode {mode:04o}: other users may read it; "
                           f"run `chmod 600 {path}` (and check who copied it)")
    if st.st_uid != os.geteuid():
        raise KeyFileError(f"{path} belongs to uid {st.st_uid}, not to this user")


def write_private(path: Path, data: bytes) -> None:
    """Create `path` (it must not exist) with mode 0600 and write `data`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
