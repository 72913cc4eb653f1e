# _sealink_crypto for Make-based ports (unix, qemu, ...).
# Sources are listed once here and once in micropython.cmake; tests/test_firmware_sources.py
# checks that the two lists agree.
SEALINK_CRYPTO_DIR := $(USERMOD_DIR)

# Monocypher 4.0.3, fetched and checksum-verified into deps/monocypher by
# tools/fetch-monocypher.sh and reached through the monocypher symlink, so that its
# object lands in each board's own build folder (MicroPython places objects by the
# source's path below USER_C_MODULES).
MONOCYPHER_DIR := $(SEALINK_CRYPTO_DIR)/monocypher

# libsodium 1.0.18's SHA-512 (one file and the headers it includes), fetched and
# checksum-verified into deps/libsodium by tools/fetch-libsodium.sh, via the libsodium
# symlink.  CONFIGURED=1: built without libsodium's configure script, which only picks
# the byte order (all Sealink targets are little-endian).
LIBSODIUM_DIR := $(SEALINK_CRYPTO_DIR)/libsodium

SRC_USERMOD_C += $(SEALINK_CRYPTO_DIR)/modsealink_crypto.c
SRC_USERMOD_C += $(SEALINK_CRYPTO_DIR)/noise.c
SRC_USERMOD_LIB_C += $(MONOCYPHER_DIR)/monocypher.c
SRC_USERMOD_LIB_C += $(SEALINK_CRYPTO_DIR)/ed25519.c
SRC_USERMOD_LIB_C += $(SEALINK_CRYPTO_DIR)/dice.c
SRC_USERMOD_LIB_C += $(SEALINK_CRYPTO_DIR)/dice_unix.c
SRC_USERMOD_LIB_C += $(SEALINK_CRYPTO_DIR)/sodium_utils.c
SRC_USERMOD_LIB_C += $(LIBSODIUM_DIR)/crypto_hash/sha512/cp/hash_sha512_cp.c

CFLAGS_USERMOD += -I$(MONOCYPHER_DIR) -I$(LIBSODIUM_DIR)/include/sodium
CFLAGS_USERMOD += -DCONFIGURED=1 -DNATIVE_LITTLE_ENDIAN=1
