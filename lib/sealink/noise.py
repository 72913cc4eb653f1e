# The Noise Protocol Framework, revision 34, for Noise_{XX,XK,KK,IK,NN,NK}_25519_ChaChaPoly_SHA256.
#
# The objects and methods follow the specification's section 5 one to one, so the code
# can be read beside it: CipherState (5.1), SymmetricState (5.2), HandshakeState (5.3).
# Method names are the spec's, in snake_case (EncryptWithAd -> encrypt_with_ad).
# DH is X25519, the cipher ChaCha20-Poly1305 (IETF, nonce = 4 zero bytes || 64-bit
# little-endian counter, section 12.3: crypto.seal_n / open_n build it), the hash
# SHA-256: all through sealink.crypto and hashlib.
#
# Keys are raw 32-byte X25519 keys: s and e are private keys (the public halves are
# derived), rs and re are public keys.  Injecting e is for test vectors only.
#
# Runs unchanged on MicroPython and CPython.

from hashlib import sha256

from sealink import crypto
from sealink.errors import AuthenticationError, CryptoError, HandshakeError, NonceExhaustedError
from sealink.hkdf import HASHLEN, hkdf

DHLEN = 32
TAGLEN = 16
MAX_NONCE = 0xFFFFFFFFFFFFFFFF  # reserved: never used to encrypt (section 5.1)
MAX_MESSAGE_LEN = 65535  # section 3

SUITE = "25519_ChaChaPoly_SHA256"

# Handshake patterns (section 7): (pre-messages initiator, responder), messages.
PATTERNS = {
    "NN": ((), (), (("e",), ("e", "ee"))),
    "NK": ((), ("s",), (("e", "es"), ("e", "ee"))),
    "XX": ((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    "XK": ((), ("s",), (("e", "es"), ("e", "ee"), ("s", "se"))),
    "KK": (("s",), ("s",), (("e", "es", "ss"), ("e", "ee", "se"))),
    "IK": ((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
}


def _own_key(secret):
    # Our copy of a private key: a sealink.keys.PrivateKey where the backend keeps key
    # objects (CPython: each DH would otherwise re-derive the key), a bare bytearray on a
    # device, whose heap is small.
    if crypto.keeps_key_objects():
        from sealink.keys import PrivateKey

        return PrivateKey(secret)
    return bytearray(secret)


def _public(key):
    return key.public if _is_held(key) else crypto.x25519_base(key)


_static = []  # [(secret, public)], the two static_public() asked for last


def static_public(secret):
    """The public key of a static private key, computed once: a device's static key
    takes part in every handshake and every save of its keystore, and an X25519 base
    multiplication is a fifth of a handshake's cost.  Cached by identity of an
    immutable `bytes` secret (held by the cache, so the identity cannot be reused), two
    of them (a device's key and, during a rotation, its next one); anything else (a
    bytearray may change) is computed each time."""
    if _is_held(secret):
        return secret.public
    for cached in _static:
        if cached[0] is secret:
            return cached[1]
    public = crypto.x25519_base(secret)
    if type(secret) is bytes:
        _static.insert(0, (secret, public))
        del _static[2:]
    return public


def _is_held(key):
    return getattr(key, "_for_backend", None) is not None


def _wipe_key(key):
    if _is_held(key):
        key.wipe()
    else:
        crypto.wipe(key)


def _dh(private, public):
    # (Unchecked: the handshake's keys are its own, checked when made; crypto.dh_n.)
    try:
        return crypto.dh_n(private, public)
    except (CryptoError, ValueError):
        raise HandshakeError(
            "DH with the peer's key failed (low-order or malformed key)") from None


_STARTS = {}  # (protocol name, prologue) -> (h, ck) after InitializeSymmetric and prologue


class CipherState:
    """Section 5.1."""

    def __init__(self, k=None):
        self.initialize_key(k)

    # InitializeKey(key)
    def initialize_key(self, key):
        self.k = None if key is None else bytes(key)
        # The key as the message path hands it to the backend (sealink.session sets it
        # with crypto.aead_key: pyca's AEAD object, built once per key and freed with
        # this state; the key itself elsewhere).
        self.aead = self.k
        self.n = 0

    # HasKey()
    def has_key(self):
        return self.k is not None

    # EncryptWithAd(ad, plaintext)
    def encrypt_with_ad(self, ad, plaintext):
        if self.k is None:
            return bytes(plaintext)
        if self.n >= MAX_NONCE:
            raise NonceExhaustedError("nonce space exhausted")
        ciphertext = crypto.seal_n(self.k, self.n, plaintext, ad, False)
        self.n += 1
        return ciphertext

    # DecryptWithAd(ad, ciphertext): the nonce advances only when the tag verifies.
    def decrypt_with_ad(self, ad, ciphertext):
        if self.k is None:
            return bytes(ciphertext)
        if self.n >= MAX_NONCE:
            raise NonceExhaustedError("nonce space exhausted")
        plaintext = crypto.open_n(self.k, self.n, ciphertext, ad)
        if plaintext is None:
            raise AuthenticationError("authentication tag does not verify")
        self.n += 1
        return plaintext

    # Rekey() (section 4.2 REKEY default: ENCRYPT(k, maxnonce, zerolen, zeros)[:32]).
    def rekey(self):
        old = bytearray(self.k)
        self.k = self.aead = crypto.seal_n(self.k, MAX_NONCE, bytes(32), b"", False)[:32]
        crypto.wipe(old)

    def wipe(self):
        self.k = self.aead = None
        self.n = 0


class SymmetricState:
    """Section 5.2."""

    # InitializeSymmetric(protocol_name); or, with start = (h, ck), the state that
    # InitializeSymmetric and the hashes after it left.
    def __init__(self, protocol_name, start=None):
        if start is None:
            if len(protocol_name) <= HASHLEN:
                h = protocol_name + bytes(HASHLEN - len(protocol_name))
            else:
                h = sha256(protocol_name).digest()
            start = (h, h)
        self.h, self.ck = start
        self.cipher = CipherState()

    # MixKey(input_key_material)
    def mix_key(self, input_key_material):
        self.ck, temp_k = hkdf(self.ck, input_key_material, 2)
        self.cipher.initialize_key(temp_k)

    # MixHash(data)
    def mix_hash(self, data):
        h = sha256(self.h)
        h.update(data)
        self.h = h.digest()

    # GetHandshakeHash()
    def get_handshake_hash(self):
        return self.h

    # EncryptAndHash(plaintext)
    def encrypt_and_hash(self, plaintext):
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    # DecryptAndHash(ciphertext)
    def decrypt_and_hash(self, ciphertext):
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    # Split()
    def split(self):
        temp_k1, temp_k2 = hkdf(self.ck, b"", 2)
        self.ck = None
        self.cipher.wipe()
        return CipherState(temp_k1), CipherState(temp_k2)


def protocol_name(pattern):
    return "Noise_%s_%s" % (pattern, SUITE)


# Full protocol name -> pattern name, for the patterns above.
_PROTOCOLS = {protocol_name(p): p for p in PATTERNS}


class HandshakeState:
    """Section 5.3.  `protocol_name` is e.g. "Noise_XX_25519_ChaChaPoly_SHA256"."""

    # Initialize(handshake_pattern, initiator, prologue, s, e, rs, re)
    def __init__(self, protocol_name, initiator, prologue=b"", s=None, e=None, rs=None,
                 re=None):
        name = _PROTOCOLS.get(protocol_name)
        if name is None:
            parts = protocol_name.split("_")
            if len(parts) != 5 or parts[0] != "Noise" or "_".join(parts[2:]) != SUITE:
                raise HandshakeError("unsupported protocol %r" % (protocol_name,))
            raise HandshakeError("unsupported handshake pattern %r" % (parts[1],))
        pre_initiator, pre_responder, self._messages = PATTERNS[name]
        self.message_count = len(self._messages)
        self.pattern = name
        self.initiator = bool(initiator)
        # A sealink.keys.PrivateKey passed in for s stays the caller's (a gateway's
        # static key serves every handshake); copies made here are wiped at the end.
        self._own_s = not _is_held(s)
        self.s_pub = None if s is None else static_public(s)
        if s is not None and self._own_s:
            s = _own_key(s)
        self.s = s
        self.e = None if e is None else _own_key(e)
        self.e_pub = None if e is None else _public(self.e)
        self.rs = None if rs is None else bytes(rs)
        self.re = None if re is None else bytes(re)
        if (rs is not None and len(self.rs) != DHLEN) or (re is not None
                                                          and len(self.re) != DHLEN):
            raise HandshakeError("a remote key must be %d bytes" % DHLEN)  # (DHs do not check)
        self._index = 0
        self._failed = False
        self._result = None

        # InitializeSymmetric(protocol_name) and MixHash(prologue): the same two hashes
        # for every handshake of a protocol and prologue, so kept (the last four).
        key = (protocol_name, bytes(prologue))
        start = _STARTS.get(key)
        if start is None:
            symmetric = SymmetricState(protocol_name.encode())
            symmetric.mix_hash(prologue)
            start = _STARTS[key] = (symmetric.h, symmetric.ck)
            while len(_STARTS) > 4:
                _STARTS.pop(next(iter(_STARTS)))
        self.symmetric = SymmetricState(None, start)
        # Pre-messages: the initiator's keys first, then the responder's (section 7.1).
        # The supported patterns only pre-share static keys ("s").
        if pre_initiator or pre_responder:
            for side_is_initiator, tokens in ((True, pre_initiator), (False, pre_responder)):
                for _ in tokens:
                    mine = side_is_initiator == self.initiator
                    key = self.s_pub if mine else self.rs
                    if key is None:
                        raise HandshakeError("pattern %s needs the %s static key before the "
                                             "handshake" % (self.pattern,
                                                            "local" if mine else "remote"))
                    self.symmetric.mix_hash(key)
        if s is None:  # (with s, there is nothing to check)
            self._check_static()

    def _check_static(self):
        for msg_index, tokens in enumerate(self._messages):
            if "s" in tokens and (msg_index % 2 == 0) == self.initiator and self.s is None:
                raise HandshakeError("pattern %s sends a static key: s is required"
                                     % self.pattern)

    @property
    def handshake_hash(self):
        return self.symmetric.get_handshake_hash()

    @property
    def complete(self):
        return self._result is not None

    def is_my_turn(self):
        return (self._index % 2 == 0) == self.initiator

    def _begin(self, writing):
        if self._failed:
            raise HandshakeError("handshake already failed")
        if self._result is not None:
            raise HandshakeError("handshake already complete")
        if self.is_my_turn() != writing:
            raise HandshakeError("out of turn: expected to %s" % ("read" if writing else "write"))
        return self._messages[self._index]

    def _finish(self):
        self._index += 1
        if self._index == len(self._messages):
            self._result = self.symmetric.split()
            if self.e is not None:
                _wipe_key(self.e)
            if self.s is not None and self._own_s:
                _wipe_key(self.s)

    def _dh_token(self, token):
        # es / se: the first letter is the initiator's key, the second the responder's.
        if token == "ee":
            return _dh(self.e, self.re)
        if token == "ss":
            return _dh(self.s, self.rs)
        local_first = self.initiator
        mine = token[0] if local_first else token[1]
        private = self.e if mine == "e" else self.s
        theirs = token[1] if local_first else token[0]
        public = self.re if theirs == "e" else self.rs
        if private is None or public is None:
            raise HandshakeError("missing key for %s" % token)
        return _dh(private, public)

    # WriteMessage(payload, message_buffer)
    def write_message(self, payload=b""):
        tokens = self._begin(True)
        try:
            out = bytearray()
            for token in tokens:
                if token == "e":
                    if self.e is None:
                        self.e = _own_key(crypto.random_bytes(DHLEN))
                        self.e_pub = _public(self.e)
                    out += self.e_pub
                    self.symmetric.mix_hash(self.e_pub)
                elif token == "s":
                    out += self.symmetric.encrypt_and_hash(self.s_pub)
                else:
                    self.symmetric.mix_key(self._dh_token(token))
            out += self.symmetric.encrypt_and_hash(payload)
            if len(out) > MAX_MESSAGE_LEN:
                raise HandshakeError("handshake message over %d bytes" % MAX_MESSAGE_LEN)
        except BaseException:
            self._failed = True
            raise
        self._finish()
        return bytes(out)

    # ReadMessage(message, payload_buffer)
    def read_message(self, message):
        tokens = self._begin(False)
        try:
            if not isinstance(message, (bytes, bytearray, memoryview)):
                raise HandshakeError("handshake message must be bytes")
            if len(message) > MAX_MESSAGE_LEN:
                raise HandshakeError("handshake message over %d bytes" % MAX_MESSAGE_LEN)
            message = bytes(message)
            pos = 0
            for token in tokens:
                if token == "e":
                    if len(message) - pos < DHLEN:
                        raise HandshakeError("handshake message truncated (e)")
                    self.re = message[pos:pos + DHLEN]
                    pos += DHLEN
                    self.symmetric.mix_hash(self.re)
                elif token == "s":
                    n = DHLEN + (TAGLEN if self.symmetric.cipher.has_key() else 0)
                    if len(message) - pos < n:
                        raise HandshakeError("handshake message truncated (s)")
                    self.rs = self.symmetric.decrypt_and_hash(message[pos:pos + n])
                    pos += n
                else:
                    self.symmetric.mix_key(self._dh_token(token))
            rest = message[pos:]
            if self.symmetric.cipher.has_key() and len(rest) < TAGLEN:
                raise HandshakeError("handshake message truncated (payload tag)")
            payload = self.symmetric.decrypt_and_hash(rest)
        except AuthenticationError:
            self._failed = True
            raise HandshakeError("handshake message does not authenticate") from None
        except BaseException:
            self._failed = True
            raise
        self._finish()
        return payload

    # The two CipherStates after the last message: (initiator->responder, responder->initiator).
    def split(self):
        if self._result is None:
            raise HandshakeError("handshake not complete")
        return self._result

    # Their keys, for a caller that keeps its own transport state (sealink.session; the
    # firmware's _sealink_crypto.Handshake has only this).
    def split_keys(self):
        to_responder, to_initiator = self.split()
        return to_responder.k, to_initiator.k
