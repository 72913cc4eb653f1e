# Shared by Sealink's QEMU boards; included from each board's mpconfigboard.mk.
SEALINK_QEMU_COMMON := $(abspath $(BOARD_DIR)/../qemu_common)

CFLAGS += -include $(SEALINK_QEMU_COMMON)/mpconfigboard_common.h -I$(SEALINK_QEMU_COMMON)
SRC_C += $(SEALINK_QEMU_COMMON)/board_hal.c $(SEALINK_QEMU_COMMON)/board_flash.c

# A filesystem on the semihosted flash (board_flash.c): littlefs v2, which
# MicroPython's source carries (lib/littlefs).
MICROPY_VFS_LFS2 = 1

# The port's default manifest require()s micropython-lib's unittest, which Debian's
# source does not carry: freeze asyncio and lib/sealink instead.
FROZEN_MANIFEST = $(BOARD_DIR)/manifest.py
