# Stock unix firmware (what a user who cannot rebuild firmware has): output
# build/UNIX_STOCK/micropython.  Built without USER_C_MODULES.
FROZEN_MANIFEST ?= $(VARIANT_DIR)/manifest.py

MICROPY_PY_BTREE = 0
MICROPY_PY_SSL = 0
MICROPY_SSL_MBEDTLS = 0
MICROPY_PY_FFI = 0
