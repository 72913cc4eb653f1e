# Sealink unix firmware: output build/UNIX/micropython.
# Debian's MicroPython source has no berkeley-db, mbedtls or micropython-lib, so the
# modules built on them are off; nothing in Sealink needs them.
FROZEN_MANIFEST ?= $(VARIANT_DIR)/manifest.py

MICROPY_PY_BTREE = 0
MICROPY_PY_SSL = 0
MICROPY_SSL_MBEDTLS = 0
MICROPY_PY_FFI = 0
