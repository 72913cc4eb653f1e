# _sealink_crypto for Make-based ports (unix, qemu, ...).
# Sources are listed once here and once in micropython.cmake; tests/test_firmware_sources.py
# checks that the two lists agree.
SEALINK_CRYPTO_DIR := $(USERMOD_DIR)

# Monocypher 4.0.3, fetched and checksum-verified into deps/monocypher by
# tools/fetch-monocypher.sh and reached through the monocypher symlink, so that its
# object lands in each board's own build folder (MicroPython places objects by the
# source's path below USER_C_MODULES).
MONOCYPHER_DIR := $(SEALINK_CRYPTO_DIR)/monocypher

SRC_USERMOD_C += $(SEALINK_CRYPTO_DIR)/modsealink_crypto.c
SRC_USERMOD_LIB_C += $(MONOCYPHER_DIR)/monocypher.c

CFLAGS_USERMOD += -I$(MONOCYPHER_DIR)
