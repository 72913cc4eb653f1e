# Sealink on QEMU's virt RV32 machine (rv32imac): the port's VIRT_RV32 board plus
# Sealink's board support (boards/qemu_common).  Build with RV32_ARCH=rv32imac: Debian
# GCC 12's default rv32imac_zicsr selects the rv64 libgcc and the link fails.
include $(TOP)/ports/qemu/boards/VIRT_RV32/mpconfigboard.mk
include $(BOARD_DIR)/../qemu_common/board.mk
# With -march=rv32imac, GCC 12's default ISA spec (20191213) leaves the CSR
# instructions out (they moved to Zicsr); ISA spec 2.2 keeps them in the base ISA
# while the multilib stays rv32imac/ilp32.
AFLAGS += -misa-spec=2.2
