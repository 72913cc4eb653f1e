"""The backend switch: automatic choice, use_backend(), SEALINK_CRYPTO_BACKEND."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devices import BUILD, LIB, DeviceError, UnixDevice
from sealink import crypto
from sealink.errors import CryptoError


def _cpython_backend(env_value):
    env = dict(os.environ, PYTHONPATH=str(LIB))
    if env_value is None:
        env.pop("SEALINK_CRYPTO_BACKEND", None)
    else:
        env["SEALINK_CRYPTO_BACKEND"] = env_value
    code = "from sealink import crypto; print(crypto.BACKEND)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_cpython_defaults_to_cryptography():
    assert _cpython_backend(None).stdout.strip() == "cryptography"


def test_cpython_env_forces_python():
    assert _cpython_backend("python").stdout.strip() == "python"


def test_env_naming_a_missing_backend_fails_loudly():
    run = _cpython_backend("native")  # no C module on CPython
    assert run.returncode != 0
    assert "CryptoError" in run.stderr and "not available" in run.stderr


def test_use_backend_rejects_unknown_names():
    before = crypto.BACKEND
    with pytest.raises(CryptoError, match="unknown crypto backend"):
        crypto.use_backend("rot13")
    assert crypto.BACKEND == before


@pytest.mark.parametrize("forced,expected", [(None, "native"), ("python", "python")])
def test_unix_firmware_backend_choice(forced, expected):
    env = {"SEALINK_CRYPTO_BACKEND": forced} if forced else {}
    device = UnixDevice("UNIX", env=env)
    try:
        assert device.exec("from sealink import crypto\nprint(crypto.BACKEND)").strip() == expected
        with pytest.raises(DeviceError, match="CryptoError"):
            device.exec("crypto.use_backend('cryptography')")
    finally:
        device.close()


def test_unix_firmware_has_the_module_frozen():
    assert (BUILD / "UNIX" / "micropython").exists()
    device = UnixDevice("UNIX", env={"MICROPYPATH": ".frozen"})
    try:
        out = device.exec("import sealink.crypto as c, _sealink_crypto\nprint(c.__file__)")
        assert Path(out.strip()).parts[0] != "/", "sealink must come from the frozen image"
    finally:
        device.close()
