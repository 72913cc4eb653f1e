// Ed25519 = Monocypher's EdDSA with SHA-512 as its hash.
//
// Monocypher 4 builds crypto_eddsa_sign / crypto_eddsa_check from public building blocks
// (crypto_eddsa_trim_scalar, _reduce, _scalarbase, _mul_add, _check_equation) and
// BLAKE2b; its optional monocypher-ed25519.c makes standard Ed25519 the same way with
// SHA-512.  That file does not ship with the sources we can fetch, so this one composes
// the same blocks, in the same order, over libsodium's SHA-512 (RFC 8032, 5.1.5-5.1.7).
// No field or group arithmetic lives here.  Tested against RFC 8032's vectors and
// Wycheproof's Ed25519 set on every board (tests/test_crypto_devices.py).

#include <string.h>

#include "crypto_hash_sha512.h"
#include "monocypher.h"
#include "ed25519.h"

void sealink_sha512(uint8_t hash[64], const uint8_t *message, size_t message_size) {
    crypto_hash_sha512(hash, message, message_size);
}

// h = SHA-512(a || b || c) mod L
static void hash_reduce(uint8_t h[32], const uint8_t *a, size_t a_size,
    const uint8_t *b, size_t b_size, const uint8_t *c, size_t c_size) {
    uint8_t hash[64];
    crypto_hash_sha512_state ctx;
    crypto_hash_sha512_init(&ctx);
    crypto_hash_sha512_update(&ctx, a, a_size);
    crypto_hash_sha512_update(&ctx, b, b_size);
    crypto_hash_sha512_update(&ctx, c, c_size);
    crypto_hash_sha512_final(&ctx, hash);  // (wipes ctx)
    crypto_eddsa_reduce(h, hash);
    crypto_wipe(hash, sizeof(hash));
}

// a = clamp(SHA-512(seed)[0:32]), prefix = SHA-512(seed)[32:64]
static void expand(uint8_t a[64], const uint8_t seed[32]) {
    crypto_hash_sha512(a, seed, 32);
    crypto_eddsa_trim_scalar(a, a);
}

void sealink_ed25519_public_key(uint8_t public_key[32], const uint8_t seed[32]) {
    uint8_t a[64];
    expand(a, seed);
    crypto_eddsa_scalarbase(public_key, a);
    crypto_wipe(a, sizeof(a));
}

void sealink_ed25519_sign(uint8_t signature[64], const uint8_t seed[32],
    const uint8_t public_key[32], const uint8_t *message, size_t message_size) {
    uint8_t a[64];  // secret scalar and prefix
    uint8_t r[32];  // deterministic nonce
    uint8_t h[32];  // publicly verifiable hash of the message
    uint8_t R[32];  // first half of the signature
    expand(a, seed);
    hash_reduce(r, a + 32, 32, message, message_size, NULL, 0);
    crypto_eddsa_scalarbase(R, r);
    hash_reduce(h, R, 32, public_key, 32, message, message_size);
    memcpy(signature, R, 32);
    crypto_eddsa_mul_add(signature + 32, h, a, r);  // S = h * a + r mod L
    crypto_wipe(a, sizeof(a));
    crypto_wipe(r, sizeof(r));
}

// RFC 8032, 5.1.3: an encoding whose y is not below p, or that gives x = 0 a sign bit
// (the only points with x = 0 have y = 1 or y = p - 1), does not decode.  Monocypher
// accepts both, on purpose; Ed25519 as specified (and Wycheproof) refuses them.  Public
// values only: variable time is fine.
static int canonical_point(const uint8_t e[32]) {
    int high_ones = (e[31] & 0x7f) == 0x7f;  // bytes 1..31 of y all ones?
    for (int i = 1; i < 31; ++i) {
        high_ones &= e[i] == 0xff;
    }
    if (high_ones && e[0] >= 0xed) {
        return 0;  // y >= p = 2^255 - 19
    }
    if (e[31] & 0x80) {
        int y_is_one = e[0] == 1 && (e[31] & 0x7f) == 0;
        for (int i = 1; i < 31 && y_is_one; ++i) {
            y_is_one = e[i] == 0;
        }
        if (y_is_one || (high_ones && e[0] == 0xec)) {
            return 0;  // x = 0 with the sign bit set
        }
    }
    return 1;
}

int sealink_ed25519_check(const uint8_t signature[64], const uint8_t public_key[32],
    const uint8_t *message, size_t message_size) {
    uint8_t h[32];
    if (!canonical_point(signature) || !canonical_point(public_key)) {
        return -1;
    }
    hash_reduce(h, signature, 32, public_key, 32, message, message_size);
    return crypto_eddsa_check_equation(signature, public_key, h);
}
