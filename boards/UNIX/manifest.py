# Frozen into build/UNIX/micropython: MicroPython's asyncio and the Sealink protocol core.
include("$(MPY_DIR)/extmod/asyncio")
package("sealink", base_path="$(BOARD_DIR)/../../lib")
