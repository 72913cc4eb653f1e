// Sealink on the MicroPython unix port: the standard feature set, plus the
// _sealink_crypto user C module and the frozen lib/sealink package.
#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)

#include "ports/unix/variants/mpconfigvariant_common.h"
