# HMAC-SHA256 (RFC 2104) and the HKDF of the Noise Protocol Framework (revision 34,
# section 4.3):
#
#   hmac_sha256(key, data) -> 32 bytes
#   hkdf(chaining_key, input_key_material, num_outputs) -> 2 or 3 outputs of 32 bytes
#
# On Sealink firmware, the C module's (over the firmware's SHA-256); elsewhere (CPython,
# stock MicroPython firmware) sealink._hkdf_python's, which Sealink firmware does not
# carry.

HASHLEN = 32

try:
    from _sealink_crypto import hkdf, hmac_sha256  # noqa: F401 (re-exported)
except ImportError:
    from sealink._hkdf_python import hkdf, hmac_sha256  # noqa: F401 (re-exported)
