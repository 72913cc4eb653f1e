// Configuration shared by Sealink's QEMU boards, force-included before the port's
// mpconfigport.h (see board.mk).  The port's patches (firmware/patches/qemu) turn the
// values below from hard-coded zeros into overridable defaults.

// time (hardware-timer ticks), select.poll on stdin, asyncio, sys.stdin.buffer.
#define MICROPY_PY_TIME (1)
#define MICROPY_PY_SELECT (1)
#define MICROPY_PY_ASYNCIO (1)
#define MICROPY_PY_SYS_STDIO_BUFFER (1)

// os.urandom from the host's /dev/urandom over semihosting (board_os.c).
#define MICROPY_PY_OS_URANDOM (1)
#define MICROPY_PY_OS_INCLUDEFILE "board_os.c"
#define MICROPY_PY_RANDOM_SEED_INIT_FUNC (board_random_seed())

// Hardening for the DICE boot stage (board_dice.c): Python code cannot run machine
// code (no @micropython.native/viper, no inline assembler, no native .mpy; patch
// 0007) nor write memory (no machine.mem8/16/32), so it cannot issue the semihosting
// calls that reach the UDS file, nor patch the code that does.
#define MICROPY_EMIT_MACHINE_CODE_ALLOWED (0)
#define MICROPY_PY_MACHINE_MEMX (0)

// One byte of hash per qstr instead of the EXTRA_FEATURES level's two (MicroPython's
// own setting at CORE_FEATURES, the level of a small microcontroller): a qstr costs a
// byte less flash, its text, length and pool entry are unchanged.  Hashes serve only
// to place names in RAM dictionaries, whose few dozen entries 256 values spread well.
#define MICROPY_QSTR_BYTES_IN_HASH (1)

// Interrupt-driven stdin, the early-init hook and sleeping while idle.
#define MICROPY_HW_BOARD_STDIO_RX (1)
#define MICROPY_BOARD_EARLY_INIT() board_early_init()
// Mount the semihosted flash, run boot.py and main.py (board_flash.c; patch 0004).
#define MICROPY_BOARD_BEFORE_REPL() board_before_repl()
// Files on that flash: open() and the os module's file functions.
#define MICROPY_PY_IO_FILEIO (1)
#define MICROPY_PY_OS_STATVFS (1)
#define MICROPY_INTERNAL_WFE(TIMEOUT_MS) board_wait_for_event((int32_t)(TIMEOUT_MS))

#ifndef __ASSEMBLER__
#include <stdint.h>
void board_early_init(void);
void board_before_repl(void);
void board_wait_for_event(int32_t timeout_ms);
uint32_t board_random_seed(void);
int board_random_fill(uint8_t *buf, uint32_t len);
#endif
