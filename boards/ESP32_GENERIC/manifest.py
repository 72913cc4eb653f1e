# The port's own frozen set (needs micropython-lib, present in an upstream checkout),
# then what Sealink runs here: BLE, IP (Wi-Fi) and an SX126x/SX127x LoRa modem through
# micropython-lib's driver (sealink.drivers.lora_modem).
include("$(PORT_DIR)/boards/manifest.py")
include("$(BOARD_DIR)/../sealink_manifest.py", drivers=("ble", "udp", "lora_modem"))
