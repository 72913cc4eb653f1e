# Generic ESP32 (Xtensa LX6) module with the Sealink crypto module and frozen lib/sealink.
set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    boards/sdkconfig.ble
)
set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
