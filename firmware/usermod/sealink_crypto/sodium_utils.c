// The one libsodium utility its SHA-512 calls, sodium_memzero, as Monocypher's wipe
// (libsodium's own utils.c brings allocation and OS code a microcontroller has no use
// for).
#include "utils.h"
#include "monocypher.h"

void sodium_memzero(void *const pnt, const size_t len) {
    crypto_wipe(pnt, len);
}
