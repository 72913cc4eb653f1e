# Sealink on QEMU's MPS2-AN385 (Cortex-M3): the port's MPS2_AN385 board plus Sealink's
# board support (boards/qemu_common).
include $(TOP)/ports/qemu/boards/MPS2_AN385/mpconfigboard.mk
include $(BOARD_DIR)/../qemu_common/board.mk
