// Generic ESP32-C3 module (4 MiB flash or more) running Sealink.
#define MICROPY_HW_BOARD_NAME "Sealink ESP32C3 module"
#define MICROPY_HW_MCU_NAME "ESP32C3"

// UART REPL for modules with an external USB-UART rather than native USB.
#define MICROPY_HW_ENABLE_UART_REPL (1)
