# The "cryptography" backend (CPython): pyca/cryptography (OpenSSL).

import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305


def private_key(secret):
    return X25519PrivateKey.from_private_bytes(bytes(secret))


# OpenSSL's key class, for an exact type test: isinstance() against the abstract
# X25519PrivateKey walks the ABC machinery, and cost a gateway's handshake 5 % of its CPU.
_KEY_TYPE = type(X25519PrivateKey.from_private_bytes(bytes(32)))


def _private(secret):
    if type(secret) is _KEY_TYPE or (type(secret) not in (bytes, bytearray)
                                     and isinstance(secret, X25519PrivateKey)):
        return secret
    return X25519PrivateKey.from_private_bytes(bytes(secret))


_PUBLIC_CACHE = 4096
_publics = {}  # public key bytes -> X25519PublicKey: a handshake uses each peer key twice


def x25519(secret, public):
    private = _private(secret)
    peer = _publics.get(public) if type(public) is bytes else None
    if peer is None:
        if len(_publics) >= _PUBLIC_CACHE:
            _publics.clear()
        public = bytes(public)
        peer = _publics[public] = X25519PublicKey.from_public_bytes(public)
    try:
        return private.exchange(peer)
    except ValueError:
        # OpenSSL refuses the all-zero shared secret itself.
        return None


def x25519_base(secret):
    return _private(secret).public_key().public_bytes_raw()


def aead_encrypt(key, nonce, plaintext, aad):
    return ChaCha20Poly1305(bytes(key)).encrypt(bytes(nonce), bytes(plaintext), bytes(aad))


def aead_decrypt(key, nonce, ciphertext, aad):
    try:
        return ChaCha20Poly1305(bytes(key)).decrypt(bytes(nonce), bytes(ciphertext), bytes(aad))
    except InvalidTag:
        return None


def compare(a, b):
    return hmac.compare_digest(bytes(a), bytes(b))


def wipe(buf):
    view = memoryview(buf).cast("B")
    view[:] = bytes(len(view))


# The message path (sealink.crypto: seal_n, open_n, open_data, seal_data), as the
# firmware's C module has it.  A key may come as bytes, or as the ChaCha20Poly1305 object
# aead_key() built for it: sealink.session keeps one per data-phase key, for the many
# frames under it, and drops it with the key (no cache here holds keys of sessions that
# ended).  (pyca keeps the key inside its object, beyond our reach to wipe.)
_NONCE = __import__("struct").Struct("<4xQ")  # the Noise nonce: 4 zero bytes, LE64 counter


def aead_key(key):
    return ChaCha20Poly1305(bytes(key))


def _aead(key):
    return key if type(key) is ChaCha20Poly1305 else aead_key(key)


def aead_seal_n(key, n, plaintext, ad, prefix):
    sealed = _aead(key).encrypt(_NONCE.pack(n), plaintext, ad)
    return ad + sealed if prefix else sealed


def aead_open_n(key, n, data, ad):
    if type(ad) is int:
        ad, data = data[:ad], data[ad:]
    if len(data) < 16:
        return None
    try:
        return _aead(key).decrypt(_NONCE.pack(n), data, ad)
    except InvalidTag:
        return None


OPEN_OLD, OPEN_REPLAYED, OPEN_FORGED, OPEN_OTHER = -1, -2, -3, -4
_LAST = (1 << 64) - 1  # the reserved nonce: never a counter
_U64 = __import__("struct").Struct("<Q")  # the window's next counter


def open_data(key, epoch, frame, window, sid):
    """A DATA, CONTROL or RELIABLE frame of session `sid` opened: counter expanded from
    its 13 bits, checked against the replay window (sealink.replay's bytearray: next
    counter LE64, then the ring of bits), tag verified, and only then the window moved.
    Returns the plaintext; or, nothing changed, a negative code (OPEN_*), or the counter
    when it belongs to another key epoch than `epoch` (the caller derives that key).
    The steps of _sealink_crypto.open_data, one for one."""
    if len(frame) < 20:
        return OPEN_OTHER
    b0 = frame[0]
    if (b0 >> 5) not in (2, 3, 6) or ((frame[1] << 8) | frame[2]) != sid:
        return OPEN_OTHER
    nxt = _U64.unpack_from(window)[0]
    size = (len(window) - 8) << 3
    n = (nxt & ~0x1FFF) | ((b0 & 0x1F) << 8) | frame[3]  # the counter closest to nxt
    if n <= nxt - 0x1000 and n + 0x2000 < _LAST + 1:   # with these low 13 bits
        n += 0x2000
    elif n > nxt + 0x1000 and n >= 0x2000:
        n -= 0x2000
    if n >= _LAST:
        return OPEN_OLD
    if n < nxt:
        if nxt - 1 - n >= size:
            return OPEN_OLD
        i = n % size
        if window[8 + (i >> 3)] & (1 << (i & 7)):
            return OPEN_REPLAYED
    if epoch < 0 or n >> 10 != epoch:
        return n
    try:
        plain = _aead(key).decrypt(_NONCE.pack(n), frame[4:], frame[:4])
    except InvalidTag:
        return OPEN_FORGED
    if n >= nxt:  # authentic: only now does the window move
        if n - nxt >= size:
            window[8:] = bytes(len(window) - 8)
        else:
            for m in range(nxt, n):  # (none for the next counter in order)
                i = m % size
                window[8 + (i >> 3)] &= ~(1 << (i & 7))
        _U64.pack_into(window, 0, n + 1)
    i = n % size
    window[8 + (i >> 3)] |= 1 << (i & 7)
    return plain


def seal_data(key, n, kind, sid, payload):
    """The frame for counter n: its 4-byte header (kind, the counter's low 13 bits,
    sid), then the ciphertext and tag of payload under the header as associated data."""
    if isinstance(payload, str):
        raise TypeError("payload must be bytes")
    if not 0 <= kind <= 7 or not 0 <= sid <= 0xFFFF:
        raise ValueError("kind or session id out of range")
    header = bytes(((kind << 5) | ((n >> 8) & 0x1F), sid >> 8, sid & 0xFF, n & 0xFF))
    return header + _aead(key).encrypt(_NONCE.pack(n), payload, header)
