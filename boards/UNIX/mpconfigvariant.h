// Sealink on the MicroPython unix port: the standard feature set, plus the
// _sealink_crypto user C module and the frozen lib/sealink package.
#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)

#include "ports/unix/variants/mpconfigvariant_common.h"

// The DICE boot stage (firmware/usermod/sealink_crypto/dice_unix.c; patch unix/0001):
// `micropython -X uds=PATH ...` measures the executable and ./boot.py, ./main.py,
// ./config.json, then derives the device's keys before any Python code runs.  Weak:
// the baseline build (no C module) has no boot stage.
#ifndef __ASSEMBLER__
void sealink_unix_boot(void) __attribute__((weak));
#endif
#define MICROPY_UNIX_BEFORE_PYTHON() do { \
        if (sealink_unix_boot) { \
            sealink_unix_boot(); \
        } \
} while (0)
