# Frozen into the firmware: MicroPython's asyncio and what a LoRa node on this board runs
# of Sealink (the RAK3172 over its UART, LoRa P2P; a LoRaWAN node adds lorawan=True).
# No require(): Debian's MicroPython source carries no micropython-lib.
include("$(MPY_DIR)/extmod/asyncio")
include("$(BOARD_DIR)/../sealink_manifest.py", app=True, opt=3)
