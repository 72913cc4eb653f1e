// _sealink_crypto: thin MicroPython bindings over Monocypher 4.0.3.
//
// No cryptographic math lives here: X25519, ChaCha20-Poly1305 (IETF, 96-bit nonce),
// constant-time comparison and wiping are Monocypher's; SHA-512 is libsodium's, and
// Ed25519 is Monocypher's EdDSA over it (ed25519.c); HMAC-SHA256 (dice.c) is RFC 2104
// over the firmware's own SHA-256 (the one hashlib uses), and hkdf() the Noise HKDF on
// it (noise.c, which also holds the Noise handshake, the Handshake type).  This file
// only moves bytes in and out, checks lengths exactly, and wipes every secret it
// copied.  The public face is lib/sealink/crypto.py, which validates types and maps
// errors to Sealink's own.

#include <string.h>

#include "py/runtime.h"
#include "py/objstr.h"
#include "py/objint.h"
#include "py/smallint.h"
#include "monocypher.h"
#include "ed25519.h"
#include "dice.h"
#include "noise.h"

#define SEALINK_KEY_SIZE (32)
#define SEALINK_NONCE_SIZE (12)
#define SEALINK_TAG_SIZE (16)

static const void *sealink_buffer(mp_obj_t obj, size_t expected_len, const char *what) {
    mp_buffer_info_t bufinfo;
    mp_get_buffer_raise(obj, &bufinfo, MP_BUFFER_READ);
    if (bufinfo.len != expected_len) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("%s must be %d bytes"),
            what, (int)expected_len);
    }
    return bufinfo.buf;
}

// ChaCha20-Poly1305 (IETF): `len` bytes of plain sealed into out (ciphertext, then the
// 16-byte tag at out + len).
static void sealink_aead_seal(uint8_t *out, const uint8_t *key, const uint8_t *nonce,
    const uint8_t *ad, size_t ad_len, const uint8_t *plain, size_t len) {
    crypto_aead_ctx ctx;
    crypto_aead_init_ietf(&ctx, key, nonce);
    crypto_aead_write(&ctx, out, out + len, ad, ad_len, plain, len);
    crypto_wipe(&ctx, sizeof(ctx));
}

// The plaintext of sealed (text_len bytes of ciphertext, then the tag) as bytes, or
// MP_OBJ_NULL when the tag does not verify.  Monocypher verifies the tag before it
// decrypts: on failure no plaintext exists.
static mp_obj_t sealink_aead_open(const uint8_t *key, const uint8_t *nonce,
    const uint8_t *ad, size_t ad_len, const uint8_t *sealed, size_t text_len) {
    vstr_t out;
    vstr_init_len(&out, text_len);
    crypto_aead_ctx ctx;
    crypto_aead_init_ietf(&ctx, key, nonce);
    int mismatch = crypto_aead_read(&ctx, (uint8_t *)out.buf, sealed + text_len, ad, ad_len,
        sealed, text_len);
    crypto_wipe(&ctx, sizeof(ctx));
    if (mismatch) {
        vstr_clear(&out);
        return MP_OBJ_NULL;
    }
    return mp_obj_new_bytes_from_vstr(&out);
}

static void sealink_put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; ++i) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

// x25519(secret, public) -> shared secret; ValueError on an all-zero result.
static mp_obj_t sealink_crypto_x25519(mp_obj_t secret_in, mp_obj_t public_in) {
    const uint8_t *secret = sealink_buffer(secret_in, SEALINK_KEY_SIZE, "secret");
    const uint8_t *public = sealink_buffer(public_in, SEALINK_KEY_SIZE, "public");
    vstr_t shared;
    vstr_init_len(&shared, SEALINK_KEY_SIZE);
    sealink_x25519_ops++;
    crypto_x25519((uint8_t *)shared.buf, secret, public);
    if (sealink_is_zero32((const uint8_t *)shared.buf)) {
        vstr_clear(&shared);
        mp_raise_ValueError(MP_ERROR_TEXT("low-order point"));
    }
    return mp_obj_new_bytes_from_vstr(&shared);
}
static MP_DEFINE_CONST_FUN_OBJ_2(sealink_crypto_x25519_obj, sealink_crypto_x25519);

// x25519_base(secret) -> public key, the same bytes as crypto_x25519_public_key (RFC
// 7748's X25519(secret, 9)), by Monocypher's fixed-base multiplication on the Edwards
// curve, about twice as fast as the Montgomery ladder.  crypto_x25519_dirty_fast adds
// the low-order point that the secret's 3 lowest bits select; X25519 clamps those bits
// to zero anyway (every scalar is a multiple of the cofactor 8), and with them zero the
// point added is the identity: the result is the clean public key, for every secret
// (docs/protocol.md: "Key generation").
static mp_obj_t sealink_public_key(mp_obj_t secret_in,
    void (*derive)(uint8_t public[32], const uint8_t secret[32])) {
    const uint8_t *secret = sealink_buffer(secret_in, SEALINK_KEY_SIZE, "secret");
    vstr_t public;
    vstr_init_len(&public, SEALINK_KEY_SIZE);
    derive((uint8_t *)public.buf, secret);
    return mp_obj_new_bytes_from_vstr(&public);
}

static mp_obj_t sealink_crypto_x25519_base(mp_obj_t secret_in) {
    return sealink_public_key(secret_in, sealink_x25519_base);
}
static MP_DEFINE_CONST_FUN_OBJ_1(sealink_crypto_x25519_base_obj, sealink_crypto_x25519_base);

// aead_seal(key, nonce, plaintext, aad) -> ciphertext || tag.
static mp_obj_t sealink_crypto_aead_seal(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    const uint8_t *key = sealink_buffer(args[0], SEALINK_KEY_SIZE, "key");
    const uint8_t *nonce = sealink_buffer(args[1], SEALINK_NONCE_SIZE, "nonce");
    mp_buffer_info_t plain;
    mp_get_buffer_raise(args[2], &plain, MP_BUFFER_READ);
    mp_buffer_info_t aad;
    mp_get_buffer_raise(args[3], &aad, MP_BUFFER_READ);

    vstr_t out;
    vstr_init_len(&out, plain.len + SEALINK_TAG_SIZE);
    sealink_aead_seal((uint8_t *)out.buf, key, nonce, aad.buf, aad.len, plain.buf, plain.len);
    return mp_obj_new_bytes_from_vstr(&out);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(sealink_crypto_aead_seal_obj, 4, 4, sealink_crypto_aead_seal);

// aead_open(key, nonce, ciphertext || tag, aad) -> plaintext; ValueError on a bad tag.
static mp_obj_t sealink_crypto_aead_open(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    const uint8_t *key = sealink_buffer(args[0], SEALINK_KEY_SIZE, "key");
    const uint8_t *nonce = sealink_buffer(args[1], SEALINK_NONCE_SIZE, "nonce");
    mp_buffer_info_t sealed;
    mp_get_buffer_raise(args[2], &sealed, MP_BUFFER_READ);
    if (sealed.len < SEALINK_TAG_SIZE) {
        mp_raise_ValueError(MP_ERROR_TEXT("ciphertext shorter than the tag"));
    }
    mp_buffer_info_t aad;
    mp_get_buffer_raise(args[3], &aad, MP_BUFFER_READ);

    mp_obj_t plain = sealink_aead_open(key, nonce, aad.buf, aad.len, sealed.buf,
        sealed.len - SEALINK_TAG_SIZE);
    if (plain == MP_OBJ_NULL) {
        mp_raise_ValueError(MP_ERROR_TEXT("authentication failed"));
    }
    return plain;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(sealink_crypto_aead_open_obj, 4, 4, sealink_crypto_aead_open);

// The Noise nonce of ChaChaPoly (revision 34, section 12.3): 4 zero bytes, then the
// 64-bit counter n, little-endian.  n is a non-negative int below 2^64.
static void sealink_noise_nonce(uint8_t nonce[SEALINK_NONCE_SIZE], mp_obj_t n_in) {
    memset(nonce, 0, SEALINK_NONCE_SIZE);
    if (mp_obj_is_small_int(n_in)) {
        mp_int_t n = MP_OBJ_SMALL_INT_VALUE(n_in);
        if (n < 0) {
            mp_raise_ValueError(MP_ERROR_TEXT("nonce counter out of range"));
        }
        sealink_put_le64(nonce + 4, (mp_uint_t)n);
        return;
    }
    #if MICROPY_LONGINT_IMPL != MICROPY_LONGINT_IMPL_NONE
    if (mp_obj_is_int(n_in) && mp_obj_int_sign(n_in) >= 0
        && mp_obj_int_to_bytes_impl(n_in, false, 8, nonce + 4)) {
        return;
    }
    #endif
    mp_raise_ValueError(MP_ERROR_TEXT("nonce counter out of range"));
}

// aead_seal_n(key, n, plaintext, ad, prefix) -> ciphertext || tag, under the Noise nonce
// of counter n; with prefix true, ad || ciphertext || tag (a Sealink frame: its header is
// the associated data).  One allocation: the result.
static mp_obj_t sealink_crypto_aead_seal_n(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    const uint8_t *key = sealink_buffer(args[0], SEALINK_KEY_SIZE, "key");
    uint8_t nonce[SEALINK_NONCE_SIZE];
    sealink_noise_nonce(nonce, args[1]);
    mp_buffer_info_t plain;
    mp_get_buffer_raise(args[2], &plain, MP_BUFFER_READ);
    mp_buffer_info_t aad;
    mp_get_buffer_raise(args[3], &aad, MP_BUFFER_READ);
    size_t head = mp_obj_is_true(args[4]) ? aad.len : 0;

    vstr_t out;
    vstr_init_len(&out, head + plain.len + SEALINK_TAG_SIZE);
    uint8_t *buf = (uint8_t *)out.buf;
    memcpy(buf, aad.buf, head);
    sealink_aead_seal(buf + head, key, nonce, aad.buf, aad.len, plain.buf, plain.len);
    return mp_obj_new_bytes_from_vstr(&out);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(sealink_crypto_aead_seal_n_obj, 5, 5, sealink_crypto_aead_seal_n);

// aead_open_n(key, n, data, ad) -> plaintext, or None when the tag does not verify (or
// data is shorter than a tag).  ad: the associated data, or an int k: the first k bytes
// of data are the associated data and the rest is ciphertext || tag (a Sealink frame
// opened where it lies, without copying it).  The tag is checked before anything is
// decrypted; on failure no plaintext exists.
static mp_obj_t sealink_crypto_aead_open_n(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    const uint8_t *key = sealink_buffer(args[0], SEALINK_KEY_SIZE, "key");
    uint8_t nonce[SEALINK_NONCE_SIZE];
    sealink_noise_nonce(nonce, args[1]);
    mp_buffer_info_t data;
    mp_get_buffer_raise(args[2], &data, MP_BUFFER_READ);
    const uint8_t *ad;
    size_t ad_len;
    const uint8_t *cipher = data.buf;
    size_t cipher_len = data.len;
    if (mp_obj_is_small_int(args[3])) {
        mp_int_t k = MP_OBJ_SMALL_INT_VALUE(args[3]);
        if (k < 0 || (size_t)k > data.len) {
            mp_raise_ValueError(MP_ERROR_TEXT("associated data longer than the data"));
        }
        ad = cipher;
        ad_len = (size_t)k;
        cipher += k;
        cipher_len -= (size_t)k;
    } else {
        mp_buffer_info_t aad;
        mp_get_buffer_raise(args[3], &aad, MP_BUFFER_READ);
        ad = aad.buf;
        ad_len = aad.len;
    }
    if (cipher_len < SEALINK_TAG_SIZE) {
        return mp_const_none;
    }
    mp_obj_t plain = sealink_aead_open(key, nonce, ad, ad_len, cipher,
        cipher_len - SEALINK_TAG_SIZE);
    return plain == MP_OBJ_NULL ? mp_const_none : plain;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(sealink_crypto_aead_open_n_obj, 4, 4, sealink_crypto_aead_open_n);

// --- The message path of sealink.session, for frames of one session ------------------
//
// A Sealink DATA / CONTROL / RELIABLE frame (lib/sealink/wire.py): byte 0 = kind << 5 |
// counter bits 12..8, bytes 1-2 = session id, byte 3 = counter bits 7..0, then the
// ChaCha20-Poly1305 ciphertext and tag of the payload; the 4 header bytes are the
// associated data and the nonce is Noise's for the full 64-bit counter.  The receiver
// rebuilds the counter from its 13 bits and checks it against a sliding replay window
// (lib/sealink/replay.py keeps the same window in Python; these two functions are the
// same steps, in C, for the firmware).
//
// The window's state is a bytearray: 8 bytes, the next counter expected (highest
// accepted + 1, little-endian), then a ring of bits, bit (n mod size) set when counter n
// was accepted, size = 8 x the remaining bytes.

#define SEALINK_COUNTER_BITS (13)
#define SEALINK_REKEY_SHIFT (10)

enum {
    SEALINK_OPEN_OLD = -1,       // older than the window
    SEALINK_OPEN_REPLAYED = -2,  // accepted before
    SEALINK_OPEN_FORGED = -3,    // the tag does not verify
    SEALINK_OPEN_OTHER = -4,     // not a data frame of this session (kind, id, length)
};

static uint64_t sealink_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) {
        v = (v << 8) | p[i];
    }
    return v;
}

// The counter closest to `expected` whose low 13 bits are `truncated` (replay.py expand).
static uint64_t sealink_expand(uint64_t expected, uint32_t truncated) {
    const uint64_t span = 1u << SEALINK_COUNTER_BITS;
    const uint64_t half = span >> 1;
    uint64_t candidate = (expected & ~(span - 1)) | truncated;
    if (candidate + half <= expected && candidate <= UINT64_MAX - span) {
        candidate += span;
    } else if (candidate > expected + half && candidate >= span) {
        candidate -= span;
    }
    return candidate;
}

// open_data(key, epoch, frame, window, sid) -> plaintext, with the window moved to take
// the frame's counter; or an int, and nothing changed: a negative code (SEALINK_OPEN_*:
// also for anything that is not a DATA, CONTROL or RELIABLE frame of session `sid`, or
// not a buffer), or the counter (>= 0) when it belongs to another key epoch than `epoch`
// (counter >> 10): the caller derives that key.
static mp_obj_t sealink_crypto_open_data(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    const uint8_t *key = sealink_buffer(args[0], SEALINK_KEY_SIZE, "key");
    mp_int_t epoch = mp_obj_get_int(args[1]);
    mp_buffer_info_t frame;
    if (mp_obj_is_str(args[2]) || !mp_get_buffer(args[2], &frame, MP_BUFFER_READ)) {
        return MP_OBJ_NEW_SMALL_INT(SEALINK_OPEN_OTHER);
    }
    mp_buffer_info_t window;
    mp_get_buffer_raise(args[3], &window, MP_BUFFER_RW);
    mp_int_t sid = mp_obj_get_int(args[4]);
    if (window.len < 9) {
        mp_raise_ValueError(MP_ERROR_TEXT("window too short"));
    }
    const uint8_t *f = frame.buf;
    uint8_t kind = frame.len ? f[0] >> 5 : 0;
    if (frame.len < 4 + SEALINK_TAG_SIZE || (kind != 2 && kind != 3 && kind != 6)
        || (((mp_int_t)f[1] << 8) | f[2]) != sid) {
        return MP_OBJ_NEW_SMALL_INT(SEALINK_OPEN_OTHER);
    }
    uint8_t *state = window.buf;
    uint8_t *bits = state + 8;
    const uint64_t size = (uint64_t)(window.len - 8) * 8;

    uint64_t next = sealink_le64(state);
    uint64_t n = sealink_expand(next, ((uint32_t)(f[0] & 0x1F) << 8) | f[3]);
    if (n == UINT64_MAX) {
        return MP_OBJ_NEW_SMALL_INT(SEALINK_OPEN_OLD);  // the reserved nonce: never
    }
    if (n < next) {  // at or below the highest accepted
        uint64_t offset = next - 1 - n;
        if (offset >= size) {
            return MP_OBJ_NEW_SMALL_INT(SEALINK_OPEN_OLD);
        }
        uint64_t i = n % size;
        if (bits[i >> 3] & (1u << (i & 7))) {
            return MP_OBJ_NEW_SMALL_INT(SEALINK_OPEN_REPLAYED);
        }
    }
    if (epoch < 0 || (n >> SEALINK_REKEY_SHIFT) != (uint64_t)epoch) {
        if (n <= (uint64_t)MP_SMALL_INT_MAX) {
            return MP_OBJ_NEW_SMALL_INT((mp_int_t)n);
        }
        return mp_obj_new_int_from_ull(n);
    }

    uint8_t nonce[SEALINK_NONCE_SIZE] = { 0 };
    sealink_put_le64(nonce + 4, n);
    mp_obj_t plain = sealink_aead_open(key, nonce, f, 4, f + 4,
        frame.len - 4 - SEALINK_TAG_SIZE);
    if (plain == MP_OBJ_NULL) {
        return MP_OBJ_NEW_SMALL_INT(SEALINK_OPEN_FORGED);
    }
    // Authentic: only now does the window move.
    if (n >= next) {
        if (n - next >= size) {
            memset(bits, 0, window.len - 8);
        } else {
            for (uint64_t m = next; m < n; ++m) {
                uint64_t i = m % size;
                bits[i >> 3] &= (uint8_t) ~(1u << (i & 7));
            }
        }
        sealink_put_le64(state, n + 1);
    }
    uint64_t i = n % size;
    bits[i >> 3] |= (uint8_t)(1u << (i & 7));
    return plain;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(sealink_crypto_open_data_obj, 5, 5, sealink_crypto_open_data);

// seal_data(key, n, kind, sid, payload) -> the frame: header for counter n, then the
// ciphertext and tag of payload (the header is the associated data).  One allocation.
// TypeError for a payload that is not bytes (a str, say).
static mp_obj_t sealink_crypto_seal_data(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    const uint8_t *key = sealink_buffer(args[0], SEALINK_KEY_SIZE, "key");
    uint8_t nonce[SEALINK_NONCE_SIZE];
    sealink_noise_nonce(nonce, args[1]);
    mp_int_t kind = mp_obj_get_int(args[2]);
    mp_int_t sid = mp_obj_get_int(args[3]);
    mp_buffer_info_t plain;
    if (mp_obj_is_str(args[4])) {
        mp_raise_TypeError(MP_ERROR_TEXT("payload must be bytes"));
    }
    mp_get_buffer_raise(args[4], &plain, MP_BUFFER_READ);
    if (kind < 0 || kind > 7 || sid < 0 || sid > 0xFFFF) {
        mp_raise_ValueError(MP_ERROR_TEXT("kind or session id out of range"));
    }
    uint32_t t = (uint32_t)nonce[4] | ((uint32_t)nonce[5] << 8);  // the counter's low bits
    vstr_t out;
    vstr_init_len(&out, 4 + plain.len + SEALINK_TAG_SIZE);
    uint8_t *buf = (uint8_t *)out.buf;
    buf[0] = (uint8_t)((kind << 5) | ((t >> 8) & 0x1F));
    buf[1] = (uint8_t)(sid >> 8);
    buf[2] = (uint8_t)sid;
    buf[3] = (uint8_t)t;
    sealink_aead_seal(buf + 4, key, nonce, buf, 4, plain.buf, plain.len);
    return mp_obj_new_bytes_from_vstr(&out);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(sealink_crypto_seal_data_obj, 5, 5, sealink_crypto_seal_data);

// compare(a, b) -> bool, in time that depends only on the lengths.
static mp_obj_t sealink_crypto_compare(mp_obj_t a_in, mp_obj_t b_in) {
    mp_buffer_info_t a;
    mp_get_buffer_raise(a_in, &a, MP_BUFFER_READ);
    mp_buffer_info_t b;
    mp_get_buffer_raise(b_in, &b, MP_BUFFER_READ);
    if (a.len != b.len) {
        return mp_const_false;
    }
    const uint8_t *pa = a.buf;
    const uint8_t *pb = b.buf;
    uint8_t acc = 0;
    for (size_t i = 0; i < a.len; ++i) {
        acc |= pa[i] ^ pb[i];
    }
    return mp_obj_new_bool(acc == 0);
}
static MP_DEFINE_CONST_FUN_OBJ_2(sealink_crypto_compare_obj, sealink_crypto_compare);

// wipe(buf): zero a writable buffer in a way the compiler cannot elide.
static mp_obj_t sealink_crypto_wipe(mp_obj_t buf_in) {
    mp_buffer_info_t buf;
    mp_get_buffer_raise(buf_in, &buf, MP_BUFFER_WRITE);
    crypto_wipe(buf.buf, buf.len);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(sealink_crypto_wipe_obj, sealink_crypto_wipe);

// sha512(data) -> 64-byte digest.
static mp_obj_t sealink_crypto_sha512(mp_obj_t data_in) {
    mp_buffer_info_t data;
    mp_get_buffer_raise(data_in, &data, MP_BUFFER_READ);
    vstr_t digest;
    vstr_init_len(&digest, 64);
    sealink_sha512((uint8_t *)digest.buf, data.buf, data.len);
    return mp_obj_new_bytes_from_vstr(&digest);
}
static MP_DEFINE_CONST_FUN_OBJ_1(sealink_crypto_sha512_obj, sealink_crypto_sha512);

// ed25519_public(private) -> public key (RFC 8032: the private key is 32 bytes).
static mp_obj_t sealink_crypto_ed25519_public(mp_obj_t secret_in) {
    const uint8_t *secret = sealink_buffer(secret_in, SEALINK_KEY_SIZE, "private key");
    vstr_t public;
    vstr_init_len(&public, SEALINK_KEY_SIZE);
    sealink_ed25519_public_key((uint8_t *)public.buf, secret);
    return mp_obj_new_bytes_from_vstr(&public);
}
static MP_DEFINE_CONST_FUN_OBJ_1(sealink_crypto_ed25519_public_obj, sealink_crypto_ed25519_public);

// ed25519_sign(private, public, message) -> 64-byte signature.
static mp_obj_t sealink_crypto_ed25519_sign(mp_obj_t secret_in, mp_obj_t public_in,
    mp_obj_t message_in) {
    const uint8_t *secret = sealink_buffer(secret_in, SEALINK_KEY_SIZE, "private key");
    const uint8_t *public = sealink_buffer(public_in, SEALINK_KEY_SIZE, "public key");
    mp_buffer_info_t message;
    mp_get_buffer_raise(message_in, &message, MP_BUFFER_READ);
    vstr_t signature;
    vstr_init_len(&signature, 64);
    sealink_ed25519_sign((uint8_t *)signature.buf, secret, public, message.buf, message.len);
    return mp_obj_new_bytes_from_vstr(&signature);
}
static MP_DEFINE_CONST_FUN_OBJ_3(sealink_crypto_ed25519_sign_obj, sealink_crypto_ed25519_sign);

// ed25519_verify(public, signature, message) -> bool.
static mp_obj_t sealink_crypto_ed25519_verify(mp_obj_t public_in, mp_obj_t signature_in,
    mp_obj_t message_in) {
    const uint8_t *public = sealink_buffer(public_in, SEALINK_KEY_SIZE, "public key");
    mp_buffer_info_t signature;
    mp_get_buffer_raise(signature_in, &signature, MP_BUFFER_READ);
    mp_buffer_info_t message;
    mp_get_buffer_raise(message_in, &message, MP_BUFFER_READ);
    if (signature.len != 64) {
        return mp_const_false;  // a malformed signature is an invalid one
    }
    return mp_obj_new_bool(
        sealink_ed25519_check(signature.buf, public, message.buf, message.len) == 0);
}
static MP_DEFINE_CONST_FUN_OBJ_3(sealink_crypto_ed25519_verify_obj, sealink_crypto_ed25519_verify);

// hmac_sha256(key, data) -> 32 bytes (RFC 2104 over the firmware's SHA-256, dice.c).
static mp_obj_t sealink_crypto_hmac_sha256(mp_obj_t key_in, mp_obj_t data_in) {
    mp_buffer_info_t key;
    mp_get_buffer_raise(key_in, &key, MP_BUFFER_READ);
    mp_buffer_info_t data;
    mp_get_buffer_raise(data_in, &data, MP_BUFFER_READ);
    vstr_t out;
    vstr_init_len(&out, 32);
    sealink_hmac_sha256((uint8_t *)out.buf, key.buf, key.len, data.buf, data.len);
    return mp_obj_new_bytes_from_vstr(&out);
}
static MP_DEFINE_CONST_FUN_OBJ_2(sealink_crypto_hmac_sha256_obj, sealink_crypto_hmac_sha256);

// hkdf(chaining_key, input_key_material, n) -> n outputs of 32 bytes, n = 2 or 3: the
// HKDF of the Noise Protocol Framework (revision 34, section 4.3), with HMAC-SHA256.
static mp_obj_t sealink_crypto_hkdf(mp_obj_t ck_in, mp_obj_t ikm_in, mp_obj_t n_in) {
    const uint8_t *ck = sealink_buffer(ck_in, 32, "chaining key");
    mp_buffer_info_t ikm;
    mp_get_buffer_raise(ikm_in, &ikm, MP_BUFFER_READ);
    mp_int_t n = mp_obj_get_int(n_in);
    if (n != 2 && n != 3) {
        mp_raise_ValueError(MP_ERROR_TEXT("hkdf gives 2 or 3 outputs"));
    }
    uint8_t outputs[3][32];
    sealink_noise_hkdf(outputs, (int)n, ck, ikm.buf, ikm.len);
    mp_obj_t items[3];
    for (mp_int_t i = 0; i < n; ++i) {
        items[i] = mp_obj_new_bytes(outputs[i], 32);
    }
    crypto_wipe(outputs, sizeof(outputs));
    return mp_obj_new_tuple(n, items);
}
static MP_DEFINE_CONST_FUN_OBJ_3(sealink_crypto_hkdf_obj, sealink_crypto_hkdf);

// static_public(secret) -> the public key of a static private key, remembered for the
// last two keys asked for (noise.c); the Handshake type uses the same.
static mp_obj_t sealink_crypto_static_public(mp_obj_t secret_in) {
    return sealink_public_key(secret_in, sealink_static_public);
}
static MP_DEFINE_CONST_FUN_OBJ_1(sealink_crypto_static_public_obj, sealink_crypto_static_public);

// x25519_ops() -> the X25519 scalar multiplications this module computed since boot
// (fixed-base ones included): a diagnostic count.
static mp_obj_t sealink_crypto_x25519_ops(void) {
    return mp_obj_new_int_from_uint(sealink_x25519_ops);
}
static MP_DEFINE_CONST_FUN_OBJ_0(sealink_crypto_x25519_ops_obj, sealink_crypto_x25519_ops);

// dice() -> None when this boot measured nothing (no UDS), else
// (state, static_key, evidence, register, [(name, digest), ...], device_id) with
// state 2 (ready)
// or negative (an error; static_key None and evidence empty).  The UDS and the DeviceID
// secret were wiped at boot: nothing here can return them.
static mp_obj_t sealink_crypto_dice(void) {
    int state = sealink_dice_state();
    if (state == SEALINK_DICE_OFF) {
        return mp_const_none;
    }
    size_t evidence_len, count;
    const uint8_t *evidence = sealink_dice_evidence(&evidence_len);
    const uint8_t *key = sealink_dice_static_key();
    const sealink_dice_event_t *events = sealink_dice_log(&count);
    mp_obj_t log = mp_obj_new_list(0, NULL);
    for (size_t i = 0; i < count; ++i) {
        mp_obj_t pair[2] = {
            mp_obj_new_str(events[i].name, strlen(events[i].name)),
            mp_obj_new_bytes(events[i].digest, 32),
        };
        mp_obj_list_append(log, mp_obj_new_tuple(2, pair));
    }
    mp_obj_t items[6] = {
        MP_OBJ_NEW_SMALL_INT(state),
        key ? mp_obj_new_bytes(key, 32) : mp_const_none,
        mp_obj_new_bytes(evidence, evidence_len),
        mp_obj_new_bytes(sealink_dice_register(), 32),
        log,
        mp_obj_new_bytes(sealink_dice_device_id(), 32),
    };
    return mp_obj_new_tuple(6, items);
}
static MP_DEFINE_CONST_FUN_OBJ_0(sealink_crypto_dice_obj, sealink_crypto_dice);

static const mp_rom_map_elem_t sealink_crypto_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__sealink_crypto) },
    { MP_ROM_QSTR(MP_QSTR_x25519), MP_ROM_PTR(&sealink_crypto_x25519_obj) },
    { MP_ROM_QSTR(MP_QSTR_x25519_base), MP_ROM_PTR(&sealink_crypto_x25519_base_obj) },
    { MP_ROM_QSTR(MP_QSTR_aead_seal), MP_ROM_PTR(&sealink_crypto_aead_seal_obj) },
    { MP_ROM_QSTR(MP_QSTR_aead_open), MP_ROM_PTR(&sealink_crypto_aead_open_obj) },
    { MP_ROM_QSTR(MP_QSTR_aead_seal_n), MP_ROM_PTR(&sealink_crypto_aead_seal_n_obj) },
    { MP_ROM_QSTR(MP_QSTR_aead_open_n), MP_ROM_PTR(&sealink_crypto_aead_open_n_obj) },
    { MP_ROM_QSTR(MP_QSTR_open_data), MP_ROM_PTR(&sealink_crypto_open_data_obj) },
    { MP_ROM_QSTR(MP_QSTR_seal_data), MP_ROM_PTR(&sealink_crypto_seal_data_obj) },
    { MP_ROM_QSTR(MP_QSTR_compare), MP_ROM_PTR(&sealink_crypto_compare_obj) },
    { MP_ROM_QSTR(MP_QSTR_wipe), MP_ROM_PTR(&sealink_crypto_wipe_obj) },
    { MP_ROM_QSTR(MP_QSTR_sha512), MP_ROM_PTR(&sealink_crypto_sha512_obj) },
    { MP_ROM_QSTR(MP_QSTR_ed25519_public), MP_ROM_PTR(&sealink_crypto_ed25519_public_obj) },
    { MP_ROM_QSTR(MP_QSTR_ed25519_sign), MP_ROM_PTR(&sealink_crypto_ed25519_sign_obj) },
    { MP_ROM_QSTR(MP_QSTR_ed25519_verify), MP_ROM_PTR(&sealink_crypto_ed25519_verify_obj) },
    { MP_ROM_QSTR(MP_QSTR_hmac_sha256), MP_ROM_PTR(&sealink_crypto_hmac_sha256_obj) },
    { MP_ROM_QSTR(MP_QSTR_hkdf), MP_ROM_PTR(&sealink_crypto_hkdf_obj) },
    { MP_ROM_QSTR(MP_QSTR_dice), MP_ROM_PTR(&sealink_crypto_dice_obj) },
    { MP_ROM_QSTR(MP_QSTR_static_public), MP_ROM_PTR(&sealink_crypto_static_public_obj) },
    { MP_ROM_QSTR(MP_QSTR_Handshake), MP_ROM_PTR(&sealink_handshake_type) },
    { MP_ROM_QSTR(MP_QSTR_x25519_ops), MP_ROM_PTR(&sealink_crypto_x25519_ops_obj) },
};
static MP_DEFINE_CONST_DICT(sealink_crypto_module_globals, sealink_crypto_module_globals_table);

const mp_obj_module_t sealink_crypto_user_cmodule = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&sealink_crypto_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR__sealink_crypto, sealink_crypto_user_cmodule);
