// Sealink's DICE layer 0: measurements, key derivation and the signed evidence.
//
//   register_0 = 32 zero bytes; register_i+1 = SHA-256(register_i || digest_i)
//   DeviceID seed = HMAC-SHA256(UDS, "sealink DeviceID v1")   (Ed25519, RFC 8032)
//   CDI           = HMAC-SHA256(UDS, register)
//   Noise static  = HMAC-SHA256(CDI, "sealink Noise static v1")  (X25519)
//
// The evidence is an EAT (RFC 9711) in a COSE_Sign1 (RFC 9052) signed with EdDSA by
// the DeviceID key, its claims:
//   265 eat_profile  "tag:sealink,2026:dice-v1"
//   256 ueid         0x01 || SHA-256(DeviceID public key)[0:16]   (RAND type)
//   271 swversion    [firmware version]
//     8 cnf          {1: COSE_Key {1: 1 (OKP), -1: 4 (X25519), -2: Noise public key}}
//  2399 sw-components (RFC 9783) [{1: name, 2: digest}, ...], in measurement order
// -70001 register     the final register (the verifier replays the components)
// and kid (4) = the ueid in the unprotected header.  The encoding is deterministic
// (RFC 8949 core rules: shortest forms, definite lengths).
//
// Only the hashing and HMAC composition live here: SHA-256 is the firmware's
// (lib/crypto-algorithms), Ed25519 and X25519 Monocypher's (ed25519.c).

#include <string.h>

#include "lib/crypto-algorithms/sha256.h"
#include "monocypher.h"
#include "ed25519.h"
#include "dice.h"

#define LOG_MAX (8)
#define EVIDENCE_MAX (512)

static int state;
static uint8_t reg[32];
static sealink_dice_event_t events[LOG_MAX];
static size_t n_events;
static uint8_t static_key[32];
static uint8_t device_id[32];
static uint8_t evidence[EVIDENCE_MAX];
static size_t evidence_len;

static void sha256(uint8_t out[32], const uint8_t *a, size_t a_len, const uint8_t *b,
    size_t b_len) {
    CRYAL_SHA256_CTX ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, a, a_len);
    if (b_len) {
        sha256_update(&ctx, b, b_len);
    }
    sha256_final(&ctx, out);
    crypto_wipe(&ctx, sizeof(ctx));
}

void sealink_hmac_sha256(uint8_t out[32], const uint8_t *key, size_t key_len,
    const uint8_t *msg, size_t msg_len) {
    uint8_t k[64] = { 0 };
    uint8_t pad[64];
    uint8_t inner[32];
    if (key_len > 64) {
        sha256(k, key, key_len, NULL, 0);
    } else {
        memcpy(k, key, key_len);
    }
    CRYAL_SHA256_CTX ctx;
    for (int i = 0; i < 64; ++i) {
        pad[i] = k[i] ^ 0x36;
    }
    sha256_init(&ctx);
    sha256_update(&ctx, pad, 64);
    sha256_update(&ctx, msg, msg_len);
    sha256_final(&ctx, inner);
    for (int i = 0; i < 64; ++i) {
        pad[i] = k[i] ^ 0x5c;
    }
    sha256(out, pad, 64, inner, 32);
    crypto_wipe(k, sizeof(k));
    crypto_wipe(pad, sizeof(pad));
    crypto_wipe(inner, sizeof(inner));
    crypto_wipe(&ctx, sizeof(ctx));
}

void sealink_dice_begin(void) {
    crypto_wipe(static_key, sizeof(static_key));
    memset(reg, 0, sizeof(reg));
    n_events = 0;
    evidence_len = 0;
    state = SEALINK_DICE_MEASURING;
}

void sealink_dice_extend(const char *name, const uint8_t digest[32]) {
    if (state != SEALINK_DICE_MEASURING) {
        return;
    }
    if (n_events == LOG_MAX) {
        state = SEALINK_DICE_LOG_FULL;
        return;
    }
    sealink_dice_event_t *e = &events[n_events++];
    memset(e->name, 0, sizeof(e->name));
    strncpy(e->name, name, sizeof(e->name) - 1);
    memcpy(e->digest, digest, 32);
    sha256(reg, reg, 32, digest, 32);
}

void sealink_dice_measure(const char *name, const uint8_t *data, size_t len) {
    uint8_t digest[32];
    sha256(digest, data, len, NULL, 0);
    sealink_dice_extend(name, digest);
}

// --- A deterministic CBOR writer for the few types the evidence uses ---------------

typedef struct {
    uint8_t *buf;
    size_t len, cap;
} cbor_t;

static void cbor_head(cbor_t *c, uint8_t major, uint64_t value) {
    uint8_t head[9];
    size_t n;
    if (value < 24) {
        head[0] = (major << 5) | (uint8_t)value;
        n = 1;
    } else if (value <= 0xff) {
        head[0] = (major << 5) | 24;
        head[1] = (uint8_t)value;
        n = 2;
    } else if (value <= 0xffff) {
        head[0] = (major << 5) | 25;
        head[1] = (uint8_t)(value >> 8);
        head[2] = (uint8_t)value;
        n = 3;
    } else {
        head[0] = (major << 5) | 26;
        for (int i = 0; i < 4; ++i) {
            head[1 + i] = (uint8_t)(value >> (24 - 8 * i));
        }
        n = 5;
    }
    if (c->len + n <= c->cap) {
        memcpy(c->buf + c->len, head, n);
    }
    c->len += n;  // an overflow is seen by the caller (len > cap)
}

static void cbor_int(cbor_t *c, int64_t v) {
    if (v >= 0) {
        cbor_head(c, 0, (uint64_t)v);
    } else {
        cbor_head(c, 1, (uint64_t)(-1 - v));
    }
}

static void cbor_bytes(cbor_t *c, uint8_t major, const void *data, size_t len) {
    cbor_head(c, major, len);
    if (c->len + len <= c->cap) {
        memcpy(c->buf + c->len, data, len);
    }
    c->len += len;
}

#define cbor_bstr(c, d, n) cbor_bytes(c, 2, d, n)
#define cbor_tstr(c, s) cbor_bytes(c, 3, s, strlen(s))

static const char PROFILE[] = "tag:sealink,2026:dice-v1";
static const char DEVICE_ID_LABEL[] = "sealink DeviceID v1";
static const char STATIC_LABEL[] = "sealink Noise static v1";

void sealink_dice_finish(const uint8_t *uds, size_t uds_len, const char *version) {
    if (state != SEALINK_DICE_MEASURING) {
        return;
    }
    if (uds_len != SEALINK_DICE_UDS_SIZE) {
        state = SEALINK_DICE_BAD_UDS;
        return;
    }
    uint8_t device_seed[32], device_pub[32], cdi[32], static_pub[32], ueid[17];
    sealink_hmac_sha256(device_seed, uds, uds_len, (const uint8_t *)DEVICE_ID_LABEL,
        sizeof(DEVICE_ID_LABEL) - 1);
    sealink_ed25519_public_key(device_pub, device_seed);
    memcpy(device_id, device_pub, sizeof(device_id));
    sealink_hmac_sha256(cdi, uds, uds_len, reg, sizeof(reg));
    sealink_hmac_sha256(static_key, cdi, sizeof(cdi), (const uint8_t *)STATIC_LABEL,
        sizeof(STATIC_LABEL) - 1);
    crypto_wipe(cdi, sizeof(cdi));
    crypto_x25519_public_key(static_pub, static_key);
    ueid[0] = 0x01;
    uint8_t h[32];
    sha256(h, device_pub, sizeof(device_pub), NULL, 0);
    memcpy(ueid + 1, h, 16);

    // The claims set (payload), then Sig_structure, then COSE_Sign1 around them.
    static uint8_t payload[EVIDENCE_MAX];
    cbor_t p = { payload, 0, sizeof(payload) };
    cbor_head(&p, 5, 6);
    cbor_int(&p, 8);  // cnf
    cbor_head(&p, 5, 1);
    cbor_int(&p, 1);  // COSE_Key
    cbor_head(&p, 5, 3);
    cbor_int(&p, 1);
    cbor_int(&p, 1);  // kty: OKP
    cbor_int(&p, -1);
    cbor_int(&p, 4);  // crv: X25519
    cbor_int(&p, -2);
    cbor_bstr(&p, static_pub, 32);
    cbor_int(&p, 256);  // ueid
    cbor_bstr(&p, ueid, sizeof(ueid));
    cbor_int(&p, 265);  // eat_profile
    cbor_tstr(&p, PROFILE);
    cbor_int(&p, 271);  // swversion
    cbor_head(&p, 4, 1);
    cbor_tstr(&p, version);
    cbor_int(&p, 2399);  // sw-components
    cbor_head(&p, 4, n_events);
    for (size_t i = 0; i < n_events; ++i) {
        cbor_head(&p, 5, 2);
        cbor_int(&p, 1);
        cbor_tstr(&p, events[i].name);
        cbor_int(&p, 2);
        cbor_bstr(&p, events[i].digest, 32);
    }
    cbor_int(&p, -70001);  // the register the components replay to
    cbor_bstr(&p, reg, sizeof(reg));

    static const uint8_t protected_hdr[] = { 0xa1, 0x01, 0x27 };  // {1 (alg): -8 (EdDSA)}
    static uint8_t tbs[EVIDENCE_MAX + 32];
    cbor_t s = { tbs, 0, sizeof(tbs) };
    cbor_head(&s, 4, 4);
    cbor_tstr(&s, "Signature1");
    cbor_bstr(&s, protected_hdr, sizeof(protected_hdr));
    cbor_bstr(&s, "", 0);  // external_aad
    cbor_bstr(&s, payload, p.len <= p.cap ? p.len : 0);
    uint8_t signature[64];
    if (p.len <= p.cap && s.len <= s.cap) {
        sealink_ed25519_sign(signature, device_seed, device_pub, tbs, s.len);
    }
    crypto_wipe(device_seed, sizeof(device_seed));

    cbor_t e = { evidence, 0, sizeof(evidence) };
    cbor_head(&e, 6, 18);  // COSE_Sign1 tag
    cbor_head(&e, 4, 4);
    cbor_bstr(&e, protected_hdr, sizeof(protected_hdr));
    cbor_head(&e, 5, 1);
    cbor_int(&e, 4);  // kid
    cbor_bstr(&e, ueid, sizeof(ueid));
    cbor_bstr(&e, payload, p.len);
    cbor_bstr(&e, signature, sizeof(signature));
    if (p.len > p.cap || s.len > s.cap || e.len > e.cap) {
        state = SEALINK_DICE_LOG_FULL;
        crypto_wipe(static_key, sizeof(static_key));
        return;
    }
    evidence_len = e.len;
    state = SEALINK_DICE_READY;
}

int sealink_dice_state(void) {
    return state;
}

const uint8_t *sealink_dice_static_key(void) {
    return state == SEALINK_DICE_READY ? static_key : NULL;
}

const uint8_t *sealink_dice_evidence(size_t *len) {
    *len = state == SEALINK_DICE_READY ? evidence_len : 0;
    return evidence;
}

const uint8_t *sealink_dice_device_id(void) {
    return device_id;
}

const uint8_t *sealink_dice_register(void) {
    return reg;
}

const sealink_dice_event_t *sealink_dice_log(size_t *count) {
    *count = n_events;
    return events;
}
