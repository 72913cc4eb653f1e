// The Noise handshake (noise.c) and the helpers it shares with modsealink_crypto.c.
#ifndef SEALINK_NOISE_H
#define SEALINK_NOISE_H

#include <stddef.h>
#include <stdint.h>

#include "py/obj.h"

// X25519 scalar multiplications computed through the module since boot (x25519_ops()):
// how a test sees that a handshake computes only its pattern's.
extern uint32_t sealink_x25519_ops;

// 1 when all 32 bytes are zero (the X25519 result of a low-order point), in constant time.
int sealink_is_zero32(const uint8_t buf[32]);

// X25519(secret, 9): a public key.
void sealink_x25519_base(uint8_t public[32], const uint8_t secret[32]);

// The same, remembered for the last two static keys asked for.
void sealink_static_public(uint8_t public[32], const uint8_t secret[32]);

// The HKDF of the Noise Protocol Framework (revision 34, section 4.3) with HMAC-SHA256:
// n (2 or 3) outputs of 32 bytes from the chaining key and ikm_len bytes of ikm.
void sealink_noise_hkdf(uint8_t (*outputs)[32], int n, const uint8_t ck[32],
    const uint8_t *ikm, size_t ikm_len);

// _sealink_crypto.Handshake: a Noise HandshakeState.
extern const mp_obj_type_t sealink_handshake_type;

#endif
