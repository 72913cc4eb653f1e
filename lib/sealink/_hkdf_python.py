# HMAC-SHA256 (RFC 2104) and the Noise HKDF (revision 34, section 4.3) where the firmware
# has no _sealink_crypto (sealink.hkdf): CPython, over OpenSSL's one-shot HMAC; stock
# MicroPython, over hashlib.sha256 (it has no hmac module).  Standard constructions over
# a standard hash; nothing here is a new primitive.  Not frozen into Sealink firmware,
# whose C module has both.

from hashlib import sha256

BLOCKLEN = 64

try:  # CPython: OpenSSL's one-shot HMAC, as hmac.digest() calls it (without its checks)
    from _hashlib import hmac_digest as _hmac_digest
except ImportError:
    try:  # CPython without OpenSSL: the standard library's HMAC
        from hmac import digest as _hmac_digest
    except ImportError:  # MicroPython: no hmac module
        _hmac_digest = None


def hmac_sha256(key, data):
    if _hmac_digest is not None:
        return _hmac_digest(key, data, "sha256")
    return python_hmac_sha256(key, data)


def python_hmac_sha256(key, data):
    # RFC 2104 in Python over hashlib (stock MicroPython firmware).
    if len(key) > BLOCKLEN:
        key = sha256(key).digest()
    key = bytes(key) + bytes(BLOCKLEN - len(key))
    inner = sha256(bytes(b ^ 0x36 for b in key))
    inner.update(data)
    outer = sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


try:  # CPython: pyca's HKDF, one call for the three HMACs (RFC 5869, below)
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF as _HKDF

    _SHA256 = SHA256()  # (stateless: one serves every call)
except ImportError:  # MicroPython, or CPython without pyca
    _HKDF = None


def hkdf(chaining_key, input_key_material, num_outputs, mac=None):
    """Noise HKDF: 2 or 3 outputs of 32 bytes, over `mac` (default hmac_sha256; the
    tests pass python_hmac_sha256 to check the pure-Python one where OpenSSL's is).

    Noise's HKDF is RFC 5869's with the chaining key as salt and no info: temp_key is
    the PRK, output i is T(i).  Where pyca is installed it computes them in one call."""
    if mac is None and _HKDF is not None:
        out = _HKDF(_SHA256, 32 * num_outputs, chaining_key, None).derive(
            bytes(input_key_material))
        return (out[:32], out[32:64]) if num_outputs == 2 else (out[:32], out[32:64], out[64:])
    mac = mac or hmac_sha256
    temp_key = mac(chaining_key, input_key_material)
    output1 = mac(temp_key, b"\x01")
    output2 = mac(temp_key, output1 + b"\x02")
    if num_outputs == 2:
        return output1, output2
    output3 = mac(temp_key, output2 + b"\x03")
    return output1, output2, output3
