// Ed25519 (RFC 8032, PureEdDSA over edwards25519 with SHA-512): Monocypher 4.0.3's
// EdDSA, whose building blocks take any 512-bit hash, over libsodium 1.0.18's SHA-512.
#ifndef SEALINK_ED25519_H
#define SEALINK_ED25519_H

#include <stddef.h>
#include <stdint.h>

// SHA-512 of one buffer.
void sealink_sha512(uint8_t hash[64], const uint8_t *message, size_t message_size);

// The public key of a 32-byte private key (RFC 8032's "seed").
void sealink_ed25519_public_key(uint8_t public_key[32], const uint8_t seed[32]);

// Sign with a 32-byte private key and its public key (not checked against each other:
// callers derive the public key with sealink_ed25519_public_key).
void sealink_ed25519_sign(uint8_t signature[64], const uint8_t seed[32],
    const uint8_t public_key[32], const uint8_t *message, size_t message_size);

// 0 if the signature is valid, -1 otherwise (S must be below L; R and A must decode).
int sealink_ed25519_check(const uint8_t signature[64], const uint8_t public_key[32],
    const uint8_t *message, size_t message_size);

#endif
