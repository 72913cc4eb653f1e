# The one exception hierarchy of Sealink.  Every error the protocol core raises on bad
# input is a SealinkError, so callers can catch one class at the radio boundary.
#
# SealinkError derives from ValueError (bad input is a bad value).  MicroPython cannot
# mix two built-in exception bases in one class, so the hierarchy has a single root.


class SealinkError(ValueError):
    pass


class CryptoError(SealinkError):
    # Bad key, nonce or buffer type or length, or a backend that is not available.
    pass


class AuthenticationError(CryptoError):
    # An AEAD tag did not verify: no plaintext was released.
    pass


class LowOrderPointError(CryptoError):
    # X25519 produced the all-zero shared secret (peer sent a low-order point).
    pass


class HandshakeError(SealinkError):
    # A handshake message was truncated, oversized, malformed or did not authenticate,
    # or the handshake was used out of order or after it failed.
    pass


class NonceExhaustedError(SealinkError):
    # A CipherState reached the reserved nonce 2^64-1: rekey or re-handshake.
    pass
