# Sealink unix firmware: output build/UNIX/micropython.
# Debian's MicroPython source has no berkeley-db, mbedtls or micropython-lib, so the
# modules built on them are off; nothing in Sealink needs them.
FROZEN_MANIFEST ?= $(VARIANT_DIR)/manifest.py

MICROPY_PY_BTREE = 0
MICROPY_PY_SSL = 0
MICROPY_SSL_MBEDTLS = 0
MICROPY_PY_FFI = 0

# The DICE boot stage states the Sealink version it was built with in the evidence.
SEALINK_VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' \
	$(VARIANT_DIR)/../../lib/sealink/__init__.py)
CFLAGS += -DSEALINK_VERSION='"$(SEALINK_VERSION)"'
