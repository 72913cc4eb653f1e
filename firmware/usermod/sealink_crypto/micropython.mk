# _sealink_crypto for Make-based ports (unix, qemu, ...).
# Sources are listed once here and once in micropython.cmake; tests/test_firmware_sources.py
# checks that the two lists agree.
SEALINK_CRYPTO_DIR := $(USERMOD_DIR)

# Monocypher 4.0.3, fetched and checksum-verified by tools/fetch-monocypher.sh.
MONOCYPHER_DIR ?= $(SEALINK_CRYPTO_DIR)/../../../deps/monocypher

SRC_USERMOD_C += $(SEALINK_CRYPTO_DIR)/modsealink_crypto.c
SRC_USERMOD_LIB_C += $(MONOCYPHER_DIR)/monocypher.c

CFLAGS_USERMOD += -I$(MONOCYPHER_DIR)
