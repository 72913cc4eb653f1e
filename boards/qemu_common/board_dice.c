// The DICE boot stage of Sealink's QEMU boards (layer 0): runs after the filesystem is
// mounted and before any Python code (boot.py, main.py, the REPL).
//
// The Unique Device Secret comes from a host file named on QEMU's command line
// (semihosting argument uds=PATH, 32 bytes; sim/qemu.py).  It measures, in order:
//   firmware   the code and read-only data, frozen modules included
//              (_sealink_image_start.._sealink_image_end, patches 0005/0006)
//   boot.py, main.py, config.json   from the filesystem, those that exist
// then hands the UDS to sealink_dice_finish (firmware/usermod/sealink_crypto/dice.c),
// which derives the keys, signs the evidence and forgets the UDS, and wipes its own
// copy.  Python sees the result through _sealink_crypto.dice().  Without a uds=
// argument, or while the file named is absent or empty (blank one-time storage),
// nothing is measured and the device has no DICE identity.
//
// Manufacturing, as `sealink device provision` drives it over the serial line:
//   _board.program_uds()  fills blank one-time storage with 32 bytes from the board's
//                         entropy source, once: the UDS never leaves the device (the
//                         host file stands for an eFuse block; a second call, or a
//                         board without one, raises OSError).  It takes effect at the
//                         next boot, as burning an eFuse key does.
//   _board.reset()        a system reset (SYSRESETREQ on Cortex-M, the test finisher's
//                         reset on RISC-V virt): QEMU reloads the image and boots it
//                         again, measuring with the new UDS; the console stays open.

#include <string.h>

#include "py/runtime.h"
#include "py/stream.h"
#include "py/builtin.h"
#include "py/mpconfig.h"
#include "shared/runtime/pyexec.h"
#include "lib/crypto-algorithms/sha256.h"
#include "monocypher.h"
#include "dice.h"

#define SYS_OPEN (0x01)
#define SYS_CLOSE (0x02)
#define SYS_WRITE (0x05)
#define SYS_READ (0x06)
#define SYS_FLEN (0x0C)
#define MODE_READ_BINARY (1)   // "rb"
#define MODE_WRITE_BINARY (5)  // "wb": creates or truncates

int32_t board_semihosting_call(uint32_t op, const void *args);
const char *board_semihosting_arg(const char *key, char *out, size_t out_len);
int board_random_fill(uint8_t *buf, uint32_t len);

extern const uint8_t _sealink_image_start[];
extern const uint8_t _sealink_image_end[];

#define FIRMWARE_VERSION "sealink-" SEALINK_VERSION "+micropython-" MICROPY_VERSION_STRING

// The UDS file's contents into `uds` (up to `cap` bytes): its length (cap + 1 if
// longer), 0 if unreadable, -1 if there is no UDS storage or it is blank.
static int32_t read_uds(uint8_t *uds, uint32_t cap) {
    char path[200];
    if (board_semihosting_arg("uds", path, sizeof(path)) == NULL) {
        return -1;
    }
    uint32_t open_args[3] = { (uint32_t)path, MODE_READ_BINARY, strlen(path) };
    int32_t handle = board_semihosting_call(SYS_OPEN, open_args);
    if (handle < 0) {
        return -1;  // blank: never programmed
    }
    uint32_t flen_args[1] = { (uint32_t)handle };
    int32_t len = board_semihosting_call(SYS_FLEN, flen_args);
    if (len == 0) {
        len = -1;  // blank
    } else if (len > 0 && (uint32_t)len <= cap) {
        uint32_t read_args[3] = { (uint32_t)handle, (uint32_t)uds, (uint32_t)len };
        if (board_semihosting_call(SYS_READ, read_args) != 0) {
            len = 0;
        }
    } else if (len > 0) {
        len = cap + 1;  // too long: only its size matters (refused)
    } else {
        len = 0;
    }
    board_semihosting_call(SYS_CLOSE, flen_args);
    return len;
}

// SHA-256 of a file on the mounted filesystem; 0 if it does not exist.
static int file_digest(const char *name, uint8_t digest[32]) {
    int found = 0;
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        mp_obj_t args[2] = { mp_obj_new_str(name, strlen(name)), MP_OBJ_NEW_QSTR(MP_QSTR_rb) };
        mp_obj_t f = mp_builtin_open(2, args, (mp_map_t *)&mp_const_empty_map);
        CRYAL_SHA256_CTX ctx;
        sha256_init(&ctx);
        uint8_t buf[256];
        for (;;) {
            int err;
            mp_uint_t n = mp_stream_rw(f, buf, sizeof(buf), &err, MP_STREAM_RW_READ);
            if (n == 0) {
                break;
            }
            sha256_update(&ctx, buf, n);
        }
        sha256_final(&ctx, digest);
        mp_stream_close(f);
        found = 1;
        nlr_pop();
    }
    return found;
}

void board_dice_boot(void) {
    uint8_t uds[SEALINK_DICE_UDS_SIZE + 1];
    int32_t uds_len = read_uds(uds, SEALINK_DICE_UDS_SIZE);
    if (uds_len < 0) {
        return;  // not provisioned
    }
    sealink_dice_begin();
    sealink_dice_measure("firmware", _sealink_image_start,
        _sealink_image_end - _sealink_image_start);
    static const char *const files[] = { "boot.py", "main.py", "config.json" };
    for (size_t i = 0; i < MP_ARRAY_SIZE(files); ++i) {
        uint8_t digest[32];
        if (file_digest(files[i], digest)) {
            sealink_dice_extend(files[i], digest);
        }
    }
    sealink_dice_finish(uds, (size_t)uds_len, FIRMWARE_VERSION);
    crypto_wipe(uds, sizeof(uds));
}

// _board.program_uds(): see the top of this file.
static mp_obj_t board_program_uds(void) {
    char path[200];
    if (board_semihosting_arg("uds", path, sizeof(path)) == NULL) {
        mp_raise_OSError(MP_ENODEV);  // no one-time storage on this board
    }
    uint8_t uds[SEALINK_DICE_UDS_SIZE + 1];
    int32_t present = read_uds(uds, SEALINK_DICE_UDS_SIZE);
    crypto_wipe(uds, sizeof(uds));
    if (present >= 0) {
        mp_raise_OSError(MP_EEXIST);  // programmed already: one time only
    }
    if (board_random_fill(uds, SEALINK_DICE_UDS_SIZE) != 0) {
        mp_raise_OSError(MP_EIO);
    }
    uint32_t open_args[3] = { (uint32_t)path, MODE_WRITE_BINARY, strlen(path) };
    int32_t handle = board_semihosting_call(SYS_OPEN, open_args);
    int32_t left = -1;
    if (handle >= 0) {
        uint32_t write_args[3] = { (uint32_t)handle, (uint32_t)uds, SEALINK_DICE_UDS_SIZE };
        left = board_semihosting_call(SYS_WRITE, write_args);  // bytes NOT written
        uint32_t close_args[1] = { (uint32_t)handle };
        board_semihosting_call(SYS_CLOSE, close_args);
    }
    crypto_wipe(uds, sizeof(uds));
    if (left != 0) {
        mp_raise_OSError(MP_EIO);
    }
    return mp_const_none;
}
MP_DEFINE_CONST_FUN_OBJ_0(board_program_uds_obj, board_program_uds);

// _board.reset(): see the top of this file.
static mp_obj_t board_reset(void) {
    // QEMU's RISC-V virt reset restarts the image without restoring its initialised
    // data, so the REPL would come back in the raw mode it was left in: boot into the
    // friendly REPL (its banner is what the host waits for), as after power-on.
    pyexec_mode_kind = PYEXEC_MODE_FRIENDLY_REPL;
    #if defined(__arm__)
    *(volatile uint32_t *)0xE000ED0C = 0x05FA0004;  // SCB->AIRCR: VECTKEY | SYSRESETREQ
    #elif defined(__riscv)
    *(volatile uint32_t *)0x00100000 = 0x7777;  // virt's sifive_test: FINISHER_RESET
    #endif
    for (;;) {
    }
    return mp_const_none;
}
MP_DEFINE_CONST_FUN_OBJ_0(board_reset_obj, board_reset);
