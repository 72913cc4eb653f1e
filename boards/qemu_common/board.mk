# Shared by Sealink's QEMU boards; included from each board's mpconfigboard.mk.
SEALINK_QEMU_COMMON := $(abspath $(BOARD_DIR)/../qemu_common)

CFLAGS += -include $(SEALINK_QEMU_COMMON)/mpconfigboard_common.h -I$(SEALINK_QEMU_COMMON)
SRC_C += $(SEALINK_QEMU_COMMON)/board_hal.c $(SEALINK_QEMU_COMMON)/board_flash.c

# The DICE boot stage (board_dice.c) uses the C module's dice.c and Monocypher, and
# states the Sealink version it was built with in the evidence.  The baseline build
# (no C module, for the size report) has no boot stage.
ifneq ($(USER_C_MODULES),)
SRC_C += $(SEALINK_QEMU_COMMON)/board_dice.c
CFLAGS += -DSEALINK_DICE=1
endif
SEALINK_VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' \
	$(SEALINK_QEMU_COMMON)/../../lib/sealink/__init__.py)
CFLAGS += -I$(SEALINK_QEMU_COMMON)/../../firmware/usermod/sealink_crypto \
	-I$(SEALINK_QEMU_COMMON)/../../deps/monocypher -DSEALINK_VERSION='"$(SEALINK_VERSION)"'

# A filesystem on the semihosted flash (board_flash.c): littlefs v2, which
# MicroPython's source carries (lib/littlefs).
MICROPY_VFS_LFS2 = 1

# The port's default manifest require()s micropython-lib's unittest, which Debian's
# source does not carry: freeze asyncio and lib/sealink instead.
FROZEN_MANIFEST = $(BOARD_DIR)/manifest.py
