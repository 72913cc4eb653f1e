# The one exception hierarchy of Sealink.  Every error the protocol core raises on bad
# input is a SealinkError, so callers can catch one class at the radio boundary.


class SealinkError(Exception):
    pass


class CryptoError(SealinkError, ValueError):
    # Bad key, nonce or buffer length, or a value the primitive refuses.
    pass


class AuthenticationError(CryptoError):
    # An AEAD tag did not verify: no plaintext was released.
    pass


class LowOrderPointError(CryptoError):
    # X25519 produced the all-zero shared secret (peer sent a low-order point).
    pass
