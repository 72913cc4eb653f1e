// The Noise Protocol Framework (revision 34) for the firmware:
// Noise_{NN,NK,XX,XK,KK,IK}_25519_ChaChaPoly_SHA256, the HandshakeState of section 5.3
// with its SymmetricState (5.2) and the handshake's CipherState (5.1) inside.
//
// The same protocol as lib/sealink/noise.py, which CPython and firmware without this
// module run; a device with it runs this one (sealink.session picks), and frozen
// firmware then leaves noise.py out.  tests/test_noise.py holds both to the same bytes,
// and both to noiseprotocol (PyPI), an independent implementation.
//
// No cryptographic math lives here: X25519 and ChaCha20-Poly1305 are Monocypher's, the
// hash the firmware's SHA-256 (lib/crypto-algorithms, the one hashlib uses), HMAC
// dice.c's (RFC 2104 over it).  Keys live in the object and are wiped as soon as the
// handshake no longer needs them: s and e when it completes, everything when it fails,
// the two transport keys once split_keys() has handed them out, and whatever is left
// when the collector frees a handshake that was abandoned (its finaliser, where the
// port has them: unix and the QEMU boards).

#include <stdarg.h>
#include <string.h>

#include "py/runtime.h"
#include "py/objstr.h"
#include "lib/crypto-algorithms/sha256.h"
#include "monocypher.h"
#include "dice.h"
#include "noise.h"

#define DHLEN (32)
#define TAGLEN (16)
#define MAX_MESSAGE_LEN (65535)  // section 3
#define SUITE "_25519_ChaChaPoly_SHA256"

// Handshake patterns (section 7).  Tokens: e, s; E = ee, a = es, b = se, S = ss.
// pre: bit 0, the initiator's static key is known to the responder before the
// handshake; bit 1, the responder's to the initiator.
typedef struct {
    char name[3];
    uint8_t pre;
    uint8_t count;
    const char *messages[3];
} sealink_pattern_t;

static const sealink_pattern_t sealink_patterns[] = {
    { "NN", 0, 2, { "e", "eE", NULL } },
    { "NK", 2, 2, { "ea", "eE", NULL } },
    { "XX", 0, 3, { "e", "eEsa", "sb" } },
    { "XK", 2, 3, { "ea", "eE", "sb" } },
    { "KK", 3, 2, { "eaS", "eEb", NULL } },
    { "IK", 2, 2, { "easS", "eEb", NULL } },
};

typedef struct {
    mp_obj_base_t base;
    const sealink_pattern_t *pattern;
    uint8_t initiator;
    uint8_t index;      // the next message
    uint8_t failed;
    uint8_t complete;
    uint8_t split;      // the transport keys were handed out (and wiped here)
    uint8_t has_k, has_s, has_e, has_rs, has_re;
    uint8_t has_s_pub;  // s_pub outlives s (wiped when the handshake completes)
    uint32_t n;         // the handshake CipherState's nonce (a handshake uses a few)
    uint8_t h[32], ck[32], k[32];
    uint8_t s[32], s_pub[32], e[32], e_pub[32], rs[32], re[32];
    uint8_t transport[2][32];  // Split(): initiator -> responder, responder -> initiator
} sealink_handshake_t;

// --- shared with modsealink_crypto.c ----------------------------------------------------

uint32_t sealink_x25519_ops;

int sealink_is_zero32(const uint8_t buf[32]) {
    uint8_t acc = 0;
    for (size_t i = 0; i < 32; ++i) {
        acc |= buf[i];
    }
    return ((acc - 1) >> 8) & 1;
}

// X25519(secret, 9) by Monocypher's fixed-base multiplication on the Edwards curve
// (crypto_x25519_dirty_fast); with the secret's 3 low bits cleared (X25519 clamps them
// anyway) the low-order point it adds is the identity: the clean public key.
void sealink_x25519_base(uint8_t public[32], const uint8_t secret[32]) {
    uint8_t clamped[32];
    memcpy(clamped, secret, 32);
    clamped[0] &= 248;
    sealink_x25519_ops++;
    crypto_x25519_dirty_fast(public, clamped);
    crypto_wipe(clamped, sizeof(clamped));
}

void sealink_noise_hkdf(uint8_t (*outputs)[32], int n, const uint8_t ck[32],
    const uint8_t *ikm, size_t ikm_len) {
    uint8_t temp_key[32];
    uint8_t block[33];  // output_i || byte i+1
    sealink_hmac_sha256(temp_key, ck, 32, ikm, ikm_len);
    block[0] = 0x01;
    sealink_hmac_sha256(outputs[0], temp_key, 32, block, 1);
    for (int i = 1; i < n; ++i) {
        memcpy(block, outputs[i - 1], 32);
        block[32] = (uint8_t)(i + 1);
        sealink_hmac_sha256(outputs[i], temp_key, 32, block, 33);
    }
    crypto_wipe(temp_key, sizeof(temp_key));
    crypto_wipe(block, sizeof(block));
}

// A static key's public key, computed once per key: a device's static key takes part in
// every handshake, and a base multiplication is a fifth of a handshake's cost.  The two
// keys asked for last (a device's and, during a rotation, its next one) are known by a
// SHA-256 of the secret (which tells nothing of it), never by a copy.
static uint8_t static_ids[2][32];
static uint8_t static_publics[2][32];
static uint8_t static_known;

void sealink_static_public(uint8_t public[32], const uint8_t secret[32]) {
    uint8_t id[32];
    CRYAL_SHA256_CTX ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, (const uint8_t *)"sealink static key id", 21);
    sha256_update(&ctx, secret, 32);
    sha256_final(&ctx, id);
    crypto_wipe(&ctx, sizeof(ctx));
    for (int i = 0; i < static_known; ++i) {
        if (memcmp(static_ids[i], id, 32) == 0) {
            memcpy(public, static_publics[i], 32);
            return;
        }
    }
    sealink_x25519_base(public, secret);
    memcpy(static_ids[1], static_ids[0], 32);
    memcpy(static_publics[1], static_publics[0], 32);
    memcpy(static_ids[0], id, 32);
    memcpy(static_publics[0], public, 32);
    if (static_known < 2) {
        ++static_known;
    }
}

// --- errors: sealink.errors' own types --------------------------------------------------

static mp_obj_t sealink_import_attr(const char *module, qstr name) {
    // (A dotted name has no MP_QSTR_ of its own: it is found among the frozen qstrs.)
    mp_obj_t mod = mp_import_name(qstr_from_str(module), mp_const_true,
        MP_OBJ_NEW_SMALL_INT(0));
    return mp_load_attr(mod, name);
}

// The secrets the handshake itself works with: its chaining key, cipher key, s and e.
static void sealink_handshake_wipe_own(sealink_handshake_t *self) {
    crypto_wipe(self->ck, 32);
    crypto_wipe(self->k, 32);
    crypto_wipe(self->s, 32);
    crypto_wipe(self->e, 32);
    self->has_k = self->has_s = self->has_e = 0;
}

// Everything: those, and the transport keys if not yet handed out.
static void sealink_handshake_wipe(sealink_handshake_t *self) {
    sealink_handshake_wipe_own(self);
    crypto_wipe(self->transport, sizeof(self->transport));
}

// Raise sealink.errors.HandshakeError(message); with self, the handshake has failed for
// good and its secrets are wiped first.
static NORETURN void sealink_handshake_raise(sealink_handshake_t *self, const char *fmt, ...) {
    if (self != NULL) {
        self->failed = 1;
        sealink_handshake_wipe(self);
    }
    vstr_t msg;
    vstr_init(&msg, 64);
    va_list ap;
    va_start(ap, fmt);
    vstr_vprintf(&msg, fmt, ap);
    va_end(ap);
    mp_obj_t cls = sealink_import_attr("sealink.errors", MP_QSTR_HandshakeError);
    nlr_raise(mp_call_function_1(cls, mp_obj_new_str_from_vstr(&msg)));
}

// A key argument: None (0), or exactly 32 bytes copied into out (1).
static int sealink_key_arg(mp_obj_t obj, uint8_t out[32], const char *what) {
    if (obj == mp_const_none) {
        return 0;
    }
    mp_buffer_info_t buf;
    if (mp_obj_is_str(obj) || !mp_get_buffer(obj, &buf, MP_BUFFER_READ) || buf.len != DHLEN) {
        sealink_handshake_raise(NULL, "%s must be %d bytes", what, DHLEN);
    }
    memcpy(out, buf.buf, DHLEN);
    return 1;
}

// --- SymmetricState (section 5.2) -------------------------------------------------------

static void sealink_mix_hash(sealink_handshake_t *self, const uint8_t *data, size_t len) {
    CRYAL_SHA256_CTX ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, self->h, 32);
    sha256_update(&ctx, data, len);
    sha256_final(&ctx, self->h);
}

static void sealink_mix_key(sealink_handshake_t *self, const uint8_t *ikm) {
    uint8_t out[2][32];
    sealink_noise_hkdf(out, 2, self->ck, ikm, DHLEN);
    memcpy(self->ck, out[0], 32);
    memcpy(self->k, out[1], 32);  // InitializeKey(temp_k): HASHLEN is DHLEN's 32
    crypto_wipe(out, sizeof(out));
    self->has_k = 1;
    self->n = 0;
}

static void sealink_handshake_nonce(const sealink_handshake_t *self, uint8_t nonce[12]) {
    memset(nonce, 0, 12);
    for (int i = 0; i < 4; ++i) {
        nonce[4 + i] = (uint8_t)(self->n >> (8 * i));
    }
}

// EncryptAndHash: len bytes of plain into out (len + TAGLEN with a key); returns the
// length written.
static size_t sealink_encrypt_and_hash(sealink_handshake_t *self, uint8_t *out,
    const uint8_t *plain, size_t len) {
    size_t out_len = len;
    if (self->has_k) {
        uint8_t nonce[12];
        sealink_handshake_nonce(self, nonce);
        crypto_aead_ctx ctx;
        crypto_aead_init_ietf(&ctx, self->k, nonce);
        crypto_aead_write(&ctx, out, out + len, self->h, 32, plain, len);
        crypto_wipe(&ctx, sizeof(ctx));
        self->n++;
        out_len += TAGLEN;
    } else {
        memmove(out, plain, len);
    }
    sealink_mix_hash(self, out, out_len);
    return out_len;
}

// DecryptAndHash: len bytes of ciphertext (with its tag when there is a key) into out.
// The tag is checked before anything is decrypted.
static void sealink_decrypt_and_hash(sealink_handshake_t *self, uint8_t *out,
    const uint8_t *cipher, size_t len) {
    if (self->has_k) {
        uint8_t nonce[12];
        sealink_handshake_nonce(self, nonce);
        crypto_aead_ctx ctx;
        crypto_aead_init_ietf(&ctx, self->k, nonce);
        int mismatch = crypto_aead_read(&ctx, out, cipher + len - TAGLEN, self->h, 32,
            cipher, len - TAGLEN);
        crypto_wipe(&ctx, sizeof(ctx));
        if (mismatch) {
            sealink_handshake_raise(self, "handshake message does not authenticate");
        }
        self->n++;
    } else {
        memmove(out, cipher, len);
    }
    sealink_mix_hash(self, cipher, len);
}

// --- HandshakeState (section 5.3) -------------------------------------------------------

// The DH of a token (ee, es, se, ss): the first letter is the initiator's key, the
// second the responder's.
static void sealink_dh_token(sealink_handshake_t *self, char token) {
    const uint8_t *private, *public;
    int have;
    bool initiator = self->initiator;
    const char *name;
    if (token == 'E') {
        name = "ee";
        private = self->e, public = self->re, have = self->has_e && self->has_re;
    } else if (token == 'S') {
        name = "ss";
        private = self->s, public = self->rs, have = self->has_s && self->has_rs;
    } else if ((token == 'a') == initiator) {  // es as initiator, se as responder
        name = token == 'a' ? "es" : "se";
        private = self->e, public = self->rs, have = self->has_e && self->has_rs;
    } else {  // se as initiator, es as responder
        name = token == 'a' ? "es" : "se";
        private = self->s, public = self->re, have = self->has_s && self->has_re;
    }
    if (!have) {
        sealink_handshake_raise(self, "missing key for %s", name);
    }
    uint8_t shared[32];
    sealink_x25519_ops++;
    crypto_x25519(shared, private, public);
    if (sealink_is_zero32(shared)) {
        crypto_wipe(shared, sizeof(shared));
        sealink_handshake_raise(self,
            "DH with the peer's key failed (low-order or malformed key)");
    }
    sealink_mix_key(self, shared);
    crypto_wipe(shared, sizeof(shared));
}

static const char *sealink_begin(sealink_handshake_t *self, bool writing) {
    if (self->failed) {
        sealink_handshake_raise(NULL, "handshake already failed");
    }
    if (self->complete) {
        sealink_handshake_raise(NULL, "handshake already complete");
    }
    if (((self->index % 2 == 0) == self->initiator) != writing) {
        sealink_handshake_raise(NULL, "out of turn: expected to %s", writing ? "read" : "write");
    }
    return self->pattern->messages[self->index];
}

static void sealink_finish(sealink_handshake_t *self) {
    if (++self->index < self->pattern->count) {
        return;
    }
    sealink_noise_hkdf(self->transport, 2, self->ck, (const uint8_t *)"", 0);  // Split()
    sealink_handshake_wipe_own(self);
    self->complete = 1;
}

static mp_obj_t sealink_random32(void) {
    mp_obj_t random_bytes = sealink_import_attr("sealink.crypto", MP_QSTR_random_bytes);
    return mp_call_function_1(random_bytes, MP_OBJ_NEW_SMALL_INT(DHLEN));
}

// write_message(payload=b"") -> the handshake message.
static mp_obj_t sealink_handshake_write_message(size_t n_args, const mp_obj_t *args) {
    sealink_handshake_t *self = MP_OBJ_TO_PTR(args[0]);
    const char *tokens = sealink_begin(self, true);
    mp_buffer_info_t payload = { .buf = (void *)"", .len = 0 };
    if (n_args > 1 && (mp_obj_is_str(args[1])
                       || !mp_get_buffer(args[1], &payload, MP_BUFFER_READ))) {
        sealink_handshake_raise(NULL, "handshake payload must be bytes");  // (nothing done)
    }
    if (payload.len > MAX_MESSAGE_LEN) {
        sealink_handshake_raise(self, "handshake message over %d bytes", MAX_MESSAGE_LEN);
    }
    size_t max_len = 2 * DHLEN + 2 * TAGLEN + payload.len;  // e, s, their tags, payload's
    if (!self->has_e && strchr(tokens, 'e') != NULL) {
        // (Before anything is written: Python code runs to get the randomness.)
        mp_obj_t e = sealink_random32();
        sealink_key_arg(e, self->e, "e");
        sealink_x25519_base(self->e_pub, self->e);
        self->has_e = 1;
    }
    vstr_t out;
    vstr_init_len(&out, max_len);
    uint8_t *buf = (uint8_t *)out.buf;
    size_t pos = 0;
    for (const char *t = tokens; *t; ++t) {
        if (*t == 'e') {
            memcpy(buf + pos, self->e_pub, DHLEN);
            sealink_mix_hash(self, self->e_pub, DHLEN);
            pos += DHLEN;
        } else if (*t == 's') {
            pos += sealink_encrypt_and_hash(self, buf + pos, self->s_pub, DHLEN);
        } else {
            sealink_dh_token(self, *t);
        }
    }
    pos += sealink_encrypt_and_hash(self, buf + pos, payload.buf, payload.len);
    if (pos > MAX_MESSAGE_LEN) {
        vstr_clear(&out);
        sealink_handshake_raise(self, "handshake message over %d bytes", MAX_MESSAGE_LEN);
    }
    out.len = pos;
    sealink_finish(self);
    return mp_obj_new_bytes_from_vstr(&out);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(sealink_handshake_write_message_obj, 1, 2,
    sealink_handshake_write_message);

// read_message(message) -> its payload.
static mp_obj_t sealink_handshake_read_message(mp_obj_t self_in, mp_obj_t message_in) {
    sealink_handshake_t *self = MP_OBJ_TO_PTR(self_in);
    const char *tokens = sealink_begin(self, false);
    mp_buffer_info_t message;
    if (mp_obj_is_str(message_in) || !mp_get_buffer(message_in, &message, MP_BUFFER_READ)) {
        sealink_handshake_raise(self, "handshake message must be bytes");
    }
    if (message.len > MAX_MESSAGE_LEN) {
        sealink_handshake_raise(self, "handshake message over %d bytes", MAX_MESSAGE_LEN);
    }
    // The payload is at most the message: allocated first, so that nothing can fail
    // between reading the message and returning its payload but the message itself.
    vstr_t out;
    vstr_init_len(&out, message.len);
    const uint8_t *msg = message.buf;
    size_t len = message.len, pos = 0;
    for (const char *t = tokens; *t; ++t) {
        if (*t == 'e') {
            if (len - pos < DHLEN) {
                sealink_handshake_raise(self, "handshake message truncated (e)");
            }
            memcpy(self->re, msg + pos, DHLEN);
            self->has_re = 1;
            sealink_mix_hash(self, self->re, DHLEN);
            pos += DHLEN;
        } else if (*t == 's') {
            size_t n = DHLEN + (self->has_k ? TAGLEN : 0);
            if (len - pos < n) {
                sealink_handshake_raise(self, "handshake message truncated (s)");
            }
            sealink_decrypt_and_hash(self, self->rs, msg + pos, n);
            self->has_rs = 1;
            pos += n;
        } else {
            sealink_dh_token(self, *t);
        }
    }
    size_t rest = len - pos;
    if (self->has_k && rest < TAGLEN) {
        sealink_handshake_raise(self, "handshake message truncated (payload tag)");
    }
    sealink_decrypt_and_hash(self, (uint8_t *)out.buf, msg + pos, rest);
    out.len = self->has_k ? rest - TAGLEN : rest;
    sealink_finish(self);
    return mp_obj_new_bytes_from_vstr(&out);
}
static MP_DEFINE_CONST_FUN_OBJ_2(sealink_handshake_read_message_obj, sealink_handshake_read_message);

// split_keys() -> (initiator->responder key, responder->initiator key), once: the
// handshake forgets them as it hands them out.
static mp_obj_t sealink_handshake_split_keys(mp_obj_t self_in) {
    sealink_handshake_t *self = MP_OBJ_TO_PTR(self_in);
    if (!self->complete) {
        sealink_handshake_raise(NULL, "handshake not complete");
    }
    if (self->split) {
        sealink_handshake_raise(NULL, "handshake keys already split");
    }
    mp_obj_t keys[2] = {
        mp_obj_new_bytes(self->transport[0], 32), mp_obj_new_bytes(self->transport[1], 32),
    };
    crypto_wipe(self->transport, sizeof(self->transport));
    self->split = 1;
    return mp_obj_new_tuple(2, keys);
}
static MP_DEFINE_CONST_FUN_OBJ_1(sealink_handshake_split_keys_obj, sealink_handshake_split_keys);

// __del__: the collector frees the handshake (or the owner is done with it).
static mp_obj_t sealink_handshake_del(mp_obj_t self_in) {
    sealink_handshake_t *self = MP_OBJ_TO_PTR(self_in);
    sealink_handshake_wipe(self);
    self->failed = 1;
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(sealink_handshake_del_obj, sealink_handshake_del);

static mp_obj_t sealink_handshake_is_my_turn(mp_obj_t self_in) {
    sealink_handshake_t *self = MP_OBJ_TO_PTR(self_in);
    return mp_obj_new_bool((self->index % 2 == 0) == self->initiator);
}
static MP_DEFINE_CONST_FUN_OBJ_1(sealink_handshake_is_my_turn_obj, sealink_handshake_is_my_turn);

// Handshake(protocol_name, initiator, prologue=b"", s=None, e=None, rs=None, re=None):
// Initialize() of section 5.3, with the pre-messages.  e is for test vectors only.
static mp_obj_t sealink_handshake_make_new(const mp_obj_type_t *type, size_t n_args,
    size_t n_kw, const mp_obj_t *args) {
    enum { ARG_name, ARG_initiator, ARG_prologue, ARG_s, ARG_e, ARG_rs, ARG_re };
    static const mp_arg_t allowed[] = {
        { MP_QSTR_protocol_name, MP_ARG_REQUIRED | MP_ARG_OBJ, { .u_obj = MP_OBJ_NULL } },
        { MP_QSTR_initiator, MP_ARG_REQUIRED | MP_ARG_BOOL, { .u_bool = false } },
        { MP_QSTR_prologue, MP_ARG_OBJ, { .u_obj = mp_const_empty_bytes } },
        { MP_QSTR_s, MP_ARG_OBJ, { .u_obj = mp_const_none } },
        { MP_QSTR_e, MP_ARG_OBJ, { .u_obj = mp_const_none } },
        { MP_QSTR_rs, MP_ARG_OBJ, { .u_obj = mp_const_none } },
        { MP_QSTR_re, MP_ARG_OBJ, { .u_obj = mp_const_none } },
    };
    mp_arg_val_t a[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all_kw_array(n_args, n_kw, args, MP_ARRAY_SIZE(allowed), allowed, a);

    size_t name_len;
    const char *name = mp_obj_str_get_data(a[ARG_name].u_obj, &name_len);
    const sealink_pattern_t *pattern = NULL;
    // "Noise_" + pattern + SUITE: 32 bytes for every pattern here, so h = the name
    // itself (InitializeSymmetric: a name of HASHLEN bytes or less is padded, not hashed).
    if (name_len == 32 && memcmp(name, "Noise_", 6) == 0 && memcmp(name + 8, SUITE, 24) == 0) {
        for (size_t i = 0; i < MP_ARRAY_SIZE(sealink_patterns); ++i) {
            if (memcmp(sealink_patterns[i].name, name + 6, 2) == 0) {
                pattern = &sealink_patterns[i];
            }
        }
        if (pattern == NULL) {
            sealink_handshake_raise(NULL, "unsupported handshake pattern '%.2s'", name + 6);
        }
    } else {
        sealink_handshake_raise(NULL, "unsupported protocol '%.*s'", (int)name_len, name);
    }
    mp_buffer_info_t prologue;
    mp_get_buffer_raise(a[ARG_prologue].u_obj, &prologue, MP_BUFFER_READ);

    sealink_handshake_t *self = mp_obj_malloc_with_finaliser(sealink_handshake_t, type);
    memset((uint8_t *)self + sizeof(mp_obj_base_t), 0,
        sizeof(sealink_handshake_t) - sizeof(mp_obj_base_t));
    self->pattern = pattern;
    self->initiator = a[ARG_initiator].u_bool;
    self->has_s = sealink_key_arg(a[ARG_s].u_obj, self->s, "a private key");
    self->has_e = sealink_key_arg(a[ARG_e].u_obj, self->e, "a private key");
    self->has_rs = sealink_key_arg(a[ARG_rs].u_obj, self->rs, "a remote key");
    self->has_re = sealink_key_arg(a[ARG_re].u_obj, self->re, "a remote key");
    if (self->has_s) {
        sealink_static_public(self->s_pub, self->s);
        self->has_s_pub = 1;
    }
    if (self->has_e) {
        sealink_x25519_base(self->e_pub, self->e);
    }
    memcpy(self->h, name, 32);
    memcpy(self->ck, name, 32);
    sealink_mix_hash(self, prologue.buf, prologue.len);
    // Pre-messages: the initiator's static key first, then the responder's (7.1).
    for (int side = 0; side < 2; ++side) {
        if (!(pattern->pre & (1 << side))) {
            continue;
        }
        bool mine = (side == 0) == self->initiator;
        if (!(mine ? self->has_s : self->has_rs)) {
            sealink_handshake_raise(self, "pattern %s needs the %s static key before the "
                "handshake", pattern->name, mine ? "local" : "remote");
        }
        sealink_mix_hash(self, mine ? self->s_pub : self->rs, DHLEN);
    }
    if (!self->has_s) {
        for (int i = 0; i < pattern->count; ++i) {
            if ((i % 2 == 0) == self->initiator && strchr(pattern->messages[i], 's') != NULL) {
                sealink_handshake_raise(self, "pattern %s sends a static key: s is required",
                    pattern->name);
            }
        }
    }
    return MP_OBJ_FROM_PTR(self);
}

// Read-only attributes, as sealink.noise.HandshakeState has them.
static void sealink_handshake_attr(mp_obj_t self_in, qstr attr, mp_obj_t *dest) {
    if (dest[0] != MP_OBJ_NULL) {
        return;  // no stores, no deletes
    }
    sealink_handshake_t *self = MP_OBJ_TO_PTR(self_in);
    switch (attr) {
        case MP_QSTR_complete:
            dest[0] = mp_obj_new_bool(self->complete);
            break;
        case MP_QSTR_handshake_hash:
            dest[0] = mp_obj_new_bytes(self->h, 32);
            break;
        case MP_QSTR_rs:
            dest[0] = self->has_rs ? mp_obj_new_bytes(self->rs, 32) : mp_const_none;
            break;
        case MP_QSTR_re:
            dest[0] = self->has_re ? mp_obj_new_bytes(self->re, 32) : mp_const_none;
            break;
        case MP_QSTR_s_pub:
            dest[0] = self->has_s_pub ? mp_obj_new_bytes(self->s_pub, 32) : mp_const_none;
            break;
        case MP_QSTR_pattern:
            dest[0] = mp_obj_new_str(self->pattern->name, 2);
            break;
        case MP_QSTR_initiator:
            dest[0] = mp_obj_new_bool(self->initiator);
            break;
        case MP_QSTR__index:
            dest[0] = MP_OBJ_NEW_SMALL_INT(self->index);
            break;
        case MP_QSTR_message_count:
            dest[0] = MP_OBJ_NEW_SMALL_INT(self->pattern->count);
            break;
        default:
            dest[1] = MP_OBJ_SENTINEL;  // the methods, in the locals dict
    }
}

static const mp_rom_map_elem_t sealink_handshake_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_write_message), MP_ROM_PTR(&sealink_handshake_write_message_obj) },
    { MP_ROM_QSTR(MP_QSTR_read_message), MP_ROM_PTR(&sealink_handshake_read_message_obj) },
    { MP_ROM_QSTR(MP_QSTR_split_keys), MP_ROM_PTR(&sealink_handshake_split_keys_obj) },
    { MP_ROM_QSTR(MP_QSTR_is_my_turn), MP_ROM_PTR(&sealink_handshake_is_my_turn_obj) },
    { MP_ROM_QSTR(MP_QSTR___del__), MP_ROM_PTR(&sealink_handshake_del_obj) },
};
static MP_DEFINE_CONST_DICT(sealink_handshake_locals, sealink_handshake_locals_table);

MP_DEFINE_CONST_OBJ_TYPE(
    sealink_handshake_type,
    MP_QSTR_Handshake,
    MP_TYPE_FLAG_NONE,
    make_new, sealink_handshake_make_new,
    attr, sealink_handshake_attr,
    locals_dict, &sealink_handshake_locals
    );
