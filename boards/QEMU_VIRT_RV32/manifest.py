# Frozen into the firmware: MicroPython's asyncio and the Sealink protocol core.
# No require(): Debian's MicroPython source carries no micropython-lib.
include("$(MPY_DIR)/extmod/asyncio")
package("sealink", base_path="$(BOARD_DIR)/../../lib")
