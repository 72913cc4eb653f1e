// A stock unix MicroPython: no Sealink C module, nothing of Sealink frozen.
// Tests load lib/sealink from files and run the pure-Python crypto fallback on it.
#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)

#include "ports/unix/variants/mpconfigvariant_common.h"
