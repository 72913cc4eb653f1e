# A private key held for many DHs, on CPython (a gateway's static key, a handshake's
# ephemeral key): kept out of sealink.crypto so that a device, which never builds one,
# does not carry the class in its heap.

from sealink import crypto


class PrivateKey:
    # An X25519 private key used for many DHs (a gateway's static key, a handshake's
    # ephemeral key): its public key is derived once, and backends that keep their own
    # key object (cryptography: OpenSSL's, which derives the public key on every load)
    # build it once.  wipe() zeroes our copy and drops the backend's object (OpenSSL
    # clears its copy when freed).
    def __init__(self, secret):
        crypto._check(secret, "secret", crypto.KEY_SIZE)
        self._secret = bytearray(secret)
        self._impl = crypto._impl
        make = getattr(crypto._impl, "private_key", None)
        self._obj = make(self._secret) if make is not None else None
        held = self._obj if self._obj is not None else self._secret
        self.public = crypto._impl.x25519_base(held)

    def _for_backend(self):
        if self._obj is not None and self._impl is crypto._impl:
            return self._obj
        return self._secret

    def wipe(self):
        crypto.wipe(self._secret)
        self._obj = None
