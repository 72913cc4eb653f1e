# Frozen into build/UNIX/micropython: MicroPython's asyncio and all of Sealink (the
# development board: every driver and backend, the tests run them all; line numbers kept).
include("$(MPY_DIR)/extmod/asyncio")
package("sealink", base_path="$(BOARD_DIR)/../../lib")
