# HMAC-SHA256 (RFC 2104) and the HKDF of the Noise Protocol Framework (revision 34,
# section 4.3), on hashlib.sha256: MicroPython has no hmac module.  Standard
# constructions over a standard hash; nothing here is a new primitive.

from hashlib import sha256

HASHLEN = 32
BLOCKLEN = 64

try:  # CPython: the standard library's HMAC (the same construction, in C)
    from hmac import digest as _hmac_digest
except ImportError:  # MicroPython: no hmac module
    _hmac_digest = None


def hmac_sha256(key, data):
    if _hmac_digest is not None:
        return _hmac_digest(key, data, "sha256")
    if len(key) > BLOCKLEN:
        key = sha256(key).digest()
    key = bytes(key) + bytes(BLOCKLEN - len(key))
    inner = sha256(bytes(b ^ 0x36 for b in key))
    inner.update(data)
    outer = sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def hkdf(chaining_key, input_key_material, num_outputs):
    """Noise HKDF: 2 or 3 outputs of HASHLEN bytes."""
    temp_key = hmac_sha256(chaining_key, input_key_material)
    output1 = hmac_sha256(temp_key, b"\x01")
    output2 = hmac_sha256(temp_key, output1 + b"\x02")
    if num_outputs == 2:
        return output1, output2
    output3 = hmac_sha256(temp_key, output2 + b"\x03")
    return output1, output2, output3
