// Generic ESP32 module (4 MiB flash or more) running Sealink.
#define MICROPY_HW_BOARD_NAME "Sealink ESP32 module"
#define MICROPY_HW_MCU_NAME "ESP32"
