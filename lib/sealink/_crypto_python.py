# The "python" backend: X25519 (RFC 7748) and ChaCha20-Poly1305 (RFC 8439) in plain
# Python, for stock MicroPython firmware that lacks the _sealink_crypto C module.
#
# These are straight transcriptions of the RFCs' algorithms, checked against the RFC
# vectors and against pyca/cryptography on every target.  The code is
# constant-structure: the Montgomery ladder runs 255 steps with an arithmetic
# conditional swap and the tag comparison accumulates XORs, so no branch or memory
# access depends on a secret.  Python's big integers are not constant-time underneath
# (their cost depends on magnitudes), so this backend resists remote timing far less
# well than Monocypher: it is a fallback, and BACKEND says when it is in use.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_P = const(2**255 - 19)
_A24 = const(121665)
_MASK32 = const(0xFFFFFFFF)
_P1305 = const(2**130 - 5)


# --- X25519, RFC 7748 section 5 -------------------------------------------------------

def _cswap(swap, a, b):
    # swap is 0 or 1; -swap is an all-zero or all-one mask.
    d = (a ^ b) & -swap
    return a ^ d, b ^ d


def _ladder(k, u):
    x1 = u
    x2, z2, x3, z3 = 1, 0, u, 1
    swap = 0
    for t in range(254, -1, -1):
        k_t = (k >> t) & 1
        swap ^= k_t
        x2, x3 = _cswap(swap, x2, x3)
        z2, z3 = _cswap(swap, z2, z3)
        swap = k_t
        a = x2 + z2
        aa = a * a % _P
        b = x2 - z2
        bb = b * b % _P
        e = aa - bb
        c = x3 + z3
        d = x3 - z3
        da = d * a % _P
        cb = c * b % _P
        x3 = (da + cb) * (da + cb) % _P
        z3 = x1 * ((da - cb) * (da - cb) % _P) % _P
        x2 = aa * bb % _P
        z2 = e * (aa + _A24 * e) % _P
    x2, x3 = _cswap(swap, x2, x3)
    z2, z3 = _cswap(swap, z2, z3)
    return x2 * pow(z2, _P - 2, _P) % _P


def _scalar(secret):
    k = bytearray(secret)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    n = int.from_bytes(k, "little")
    for i in range(32):
        k[i] = 0
    return n


def _u(public):
    u = bytearray(public)
    u[31] &= 127
    return int.from_bytes(u, "little") % _P


def x25519(secret, public):
    shared = _ladder(_scalar(secret), _u(public)).to_bytes(32, "little")
    if not compare(shared, bytes(32)):
        return shared
    return None


def x25519_base(secret):
    return _ladder(_scalar(secret), 9).to_bytes(32, "little")


# --- ChaCha20, RFC 8439 section 2.3 ---------------------------------------------------

def _words(b):
    return [int.from_bytes(b[i:i + 4], "little") for i in range(0, len(b), 4)]


def _qr(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & _MASK32
    x = s[d] ^ s[a]
    s[d] = ((x << 16) | (x >> 16)) & _MASK32
    s[c] = (s[c] + s[d]) & _MASK32
    x = s[b] ^ s[c]
    s[b] = ((x << 12) | (x >> 20)) & _MASK32
    s[a] = (s[a] + s[b]) & _MASK32
    x = s[d] ^ s[a]
    s[d] = ((x << 8) | (x >> 24)) & _MASK32
    s[c] = (s[c] + s[d]) & _MASK32
    x = s[b] ^ s[c]
    s[b] = ((x << 7) | (x >> 25)) & _MASK32


def _block(key_words, counter, nonce_words, out):
    # Writes the 64-byte keystream block into bytearray `out`.
    init = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    init += key_words
    init.append(counter)
    init += nonce_words
    s = list(init)
    for _ in range(10):
        _qr(s, 0, 4, 8, 12)
        _qr(s, 1, 5, 9, 13)
        _qr(s, 2, 6, 10, 14)
        _qr(s, 3, 7, 11, 15)
        _qr(s, 0, 5, 10, 15)
        _qr(s, 1, 6, 11, 12)
        _qr(s, 2, 7, 8, 13)
        _qr(s, 3, 4, 9, 14)
    for i in range(16):
        w = (s[i] + init[i]) & _MASK32
        out[4 * i] = w & 0xFF
        out[4 * i + 1] = (w >> 8) & 0xFF
        out[4 * i + 2] = (w >> 16) & 0xFF
        out[4 * i + 3] = w >> 24


def _chacha20_xor(key, counter, nonce, data):
    key_words = _words(key)
    nonce_words = _words(nonce)
    out = bytearray(data)
    stream = bytearray(64)
    for off in range(0, len(out), 64):
        _block(key_words, counter, nonce_words, stream)
        counter = (counter + 1) & _MASK32
        for i in range(min(64, len(out) - off)):
            out[off + i] ^= stream[i]
    for i in range(64):
        stream[i] = 0
    return out


# --- Poly1305, RFC 8439 section 2.5, and the AEAD of section 2.8 ----------------------

def _poly1305(otk, parts):
    # Each part is a whole number of 16-byte blocks (the AEAD pads them), so blocks never
    # straddle parts.
    r = int.from_bytes(otk[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(otk[16:32], "little")
    acc = 0
    for msg in parts:
        for i in range(0, len(msg), 16):
            n = int.from_bytes(msg[i:i + 16], "little") + (1 << 128)
            acc = (acc + n) * r % _P1305
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def _pad16(n):
    return bytes((16 - n % 16) % 16)


def _tag(key, nonce, aad, ciphertext):
    otk = bytearray(64)
    _block(_words(key), 0, _words(nonce), otk)
    lengths = len(aad).to_bytes(8, "little") + len(ciphertext).to_bytes(8, "little")
    tag = _poly1305(otk, (bytes(aad) + _pad16(len(aad)),
                          ciphertext + _pad16(len(ciphertext)), lengths))
    for i in range(64):
        otk[i] = 0
    return tag


def aead_encrypt(key, nonce, plaintext, aad):
    ciphertext = bytes(_chacha20_xor(key, 1, nonce, plaintext))
    return ciphertext + _tag(key, nonce, aad, ciphertext)


def aead_decrypt(key, nonce, sealed, aad):
    ciphertext = bytes(sealed[:-16])
    # Verify before decrypting: no plaintext exists unless the tag matches.
    if not compare(_tag(key, nonce, aad, ciphertext), sealed[-16:]):
        return None
    return bytes(_chacha20_xor(key, 1, nonce, ciphertext))


# The message path (sealink.crypto: seal_n, open_n).


def _noise_nonce(n):
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def aead_seal_n(key, n, plaintext, ad, prefix):
    sealed = aead_encrypt(key, _noise_nonce(n), plaintext, ad)
    return bytes(ad) + sealed if prefix else sealed


def aead_open_n(key, n, data, ad):
    if isinstance(ad, int):
        ad, data = data[:ad], data[ad:]
    if len(data) < 16:
        return None
    return aead_decrypt(key, _noise_nonce(n), data, ad)


# --- Helpers --------------------------------------------------------------------------

def compare(a, b):
    if len(a) != len(b):
        return False
    acc = 0
    for i in range(len(a)):
        acc |= a[i] ^ b[i]
    return acc == 0


def wipe(buf):
    for i in range(len(buf)):
        buf[i] = 0
