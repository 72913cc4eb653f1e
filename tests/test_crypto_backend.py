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


def test_cpython_hkdf_is_noises_hkdf():
    """On CPython sealink.hkdf takes pyca's HKDF (RFC 5869: the chaining key as salt,
    no info), one call for Noise's three HMACs: every output must be the Noise
    specification's chain (section 4.3) over the standard library's HMAC, for the
    input key material a handshake gives it (none at Split, a DH result, a PSK) and
    in every buffer type it may come in."""
    import random

    from reference import noise_hkdf
    from sealink import _hkdf_python, hkdf

    assert _hkdf_python._HKDF is not None and hkdf.hkdf is _hkdf_python.hkdf
    rng = random.Random(0x5EA1)
    for ikm_len in (0, 32, 64):
        for n in (2, 3):
            ck, ikm = rng.randbytes(32), rng.randbytes(ikm_len)
            want = noise_hkdf(ck, ikm, n)
            for buf in (bytes, bytearray, memoryview):
                assert hkdf.hkdf(ck, buf(ikm), n) == want
            assert _hkdf_python.hkdf(ck, ikm, n, _hkdf_python.python_hmac_sha256) == want
