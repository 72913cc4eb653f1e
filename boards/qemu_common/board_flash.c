// Persistent storage for Sealink's QEMU boards: a block device backed by a host file
// through semihosting, mounted as littlefs (v2) at / before the REPL starts, then
// boot.py and main.py run from it, as on a real board.
//
// The host names the file on QEMU's command line:
//   -semihosting-config enable=on,target=native,arg=sealink,arg=flash=/path/flash.img
// (sim/qemu.py makes the image and the command line).  Without a flash= argument the
// board boots as before, with no filesystem.  A blank image is formatted on first boot.
//
// The device is a `_board.Flash()` object with MicroPython's extended block protocol
// (readblocks/writeblocks with an offset, ioctl), 4 KiB blocks.  Writes reach the host
// file at once (no cache), so killing QEMU is a power cut; littlefs is built to
// survive one.

#include <string.h>

#include "py/runtime.h"
#include "py/mperrno.h"
#include "extmod/vfs.h"
#include "extmod/vfs_lfs.h"
#include "shared/runtime/pyexec.h"

#define SYS_OPEN (0x01)
#define SYS_WRITE (0x05)
#define SYS_READ (0x06)
#define SYS_SEEK (0x0A)
#define SYS_FLEN (0x0C)
#define SYS_GET_CMDLINE (0x15)
#define MODE_READ_WRITE_BINARY (3)  // "r+b": the file must exist

#define FLASH_BLOCK_SIZE (4096)

int32_t board_semihosting_call(uint32_t op, const void *args);
void board_dice_boot(void);

static int32_t flash_handle = -1;
static uint32_t flash_blocks;
static char cmdline[256];

// The value of `key=` among the semihosting arguments, or NULL.  Copied out of
// `cmdline` into `out` (NUL-terminated).
const char *board_semihosting_arg(const char *key, char *out, size_t out_len) {
    if (cmdline[0] == 0) {
        uint32_t args[2] = { (uint32_t)cmdline, sizeof(cmdline) - 1 };
        if (board_semihosting_call(SYS_GET_CMDLINE, args) != 0) {
            cmdline[0] = ' ';  // none: do not ask again
            cmdline[1] = 0;
            return NULL;
        }
        cmdline[args[1] < sizeof(cmdline) - 1 ? args[1] : sizeof(cmdline) - 1] = 0;
    }
    size_t key_len = strlen(key);
    const char *p = cmdline;
    while (*p) {
        while (*p == ' ') {
            ++p;
        }
        const char *end = p;
        while (*end && *end != ' ') {
            ++end;
        }
        if ((size_t)(end - p) > key_len && strncmp(p, key, key_len) == 0 && p[key_len] == '=') {
            size_t n = end - p - key_len - 1;
            if (n >= out_len) {
                return NULL;
            }
            memcpy(out, p + key_len + 1, n);
            out[n] = 0;
            return out;
        }
        p = end;
    }
    return NULL;
}

static void flash_open(void) {
    char path[200];
    if (flash_handle >= 0 || board_semihosting_arg("flash", path, sizeof(path)) == NULL) {
        return;
    }
    uint32_t args[3] = { (uint32_t)path, MODE_READ_WRITE_BINARY, strlen(path) };
    int32_t handle = board_semihosting_call(SYS_OPEN, args);
    if (handle < 0) {
        return;
    }
    uint32_t flen_args[1] = { (uint32_t)handle };
    int32_t len = board_semihosting_call(SYS_FLEN, flen_args);
    if (len < 2 * FLASH_BLOCK_SIZE) {
        return;
    }
    flash_blocks = (uint32_t)len / FLASH_BLOCK_SIZE;
    flash_handle = handle;
}

// Read or write `len` bytes at byte `pos` of the image: 0, or -MP_EIO.
static int flash_io(uint32_t op, uint32_t pos, uint8_t *buf, uint32_t len) {
    uint32_t seek[2] = { (uint32_t)flash_handle, pos };
    if (board_semihosting_call(SYS_SEEK, seek) != 0) {
        return -MP_EIO;
    }
    uint32_t args[3] = { (uint32_t)flash_handle, (uint32_t)buf, len };
    // SYS_READ and SYS_WRITE return the number of bytes NOT transferred.
    return board_semihosting_call(op, args) == 0 ? 0 : -MP_EIO;
}

typedef struct _flash_obj_t {
    mp_obj_base_t base;
} flash_obj_t;

static const mp_obj_type_t flash_type;
static const flash_obj_t flash_obj = { { &flash_type } };

static mp_obj_t flash_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw,
    const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 0, 0, false);
    flash_open();
    if (flash_handle < 0) {
        mp_raise_OSError(MP_ENODEV);
    }
    return MP_OBJ_FROM_PTR(&flash_obj);
}

static mp_obj_t flash_rw(size_t n_args, const mp_obj_t *args, uint32_t op) {
    uint32_t block = mp_obj_get_int(args[1]);
    uint32_t offset = n_args > 3 ? mp_obj_get_int(args[3]) : 0;
    mp_buffer_info_t buf;
    mp_get_buffer_raise(args[2], &buf, op == SYS_READ ? MP_BUFFER_WRITE : MP_BUFFER_READ);
    if (block >= flash_blocks || offset > FLASH_BLOCK_SIZE
        || buf.len > (flash_blocks - block) * FLASH_BLOCK_SIZE - offset) {
        return MP_OBJ_NEW_SMALL_INT(-MP_EINVAL);
    }
    return MP_OBJ_NEW_SMALL_INT(flash_io(op, block * FLASH_BLOCK_SIZE + offset, buf.buf, buf.len));
}

static mp_obj_t flash_readblocks(size_t n_args, const mp_obj_t *args) {
    return flash_rw(n_args, args, SYS_READ);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(flash_readblocks_obj, 3, 4, flash_readblocks);

static mp_obj_t flash_writeblocks(size_t n_args, const mp_obj_t *args) {
    return flash_rw(n_args, args, SYS_WRITE);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(flash_writeblocks_obj, 3, 4, flash_writeblocks);

static mp_obj_t flash_ioctl(mp_obj_t self_in, mp_obj_t op_in, mp_obj_t arg_in) {
    switch (mp_obj_get_int(op_in)) {
        case MP_BLOCKDEV_IOCTL_INIT:
        case MP_BLOCKDEV_IOCTL_DEINIT:
        case MP_BLOCKDEV_IOCTL_SYNC:
            return MP_OBJ_NEW_SMALL_INT(0);  // every write is already in the host file
        case MP_BLOCKDEV_IOCTL_BLOCK_COUNT:
            return MP_OBJ_NEW_SMALL_INT(flash_blocks);
        case MP_BLOCKDEV_IOCTL_BLOCK_SIZE:
            return MP_OBJ_NEW_SMALL_INT(FLASH_BLOCK_SIZE);
        case MP_BLOCKDEV_IOCTL_BLOCK_ERASE:
            return MP_OBJ_NEW_SMALL_INT(0);  // a file needs no erase before a write
        default:
            return mp_const_none;
    }
}
static MP_DEFINE_CONST_FUN_OBJ_3(flash_ioctl_obj, flash_ioctl);

static const mp_rom_map_elem_t flash_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_readblocks), MP_ROM_PTR(&flash_readblocks_obj) },
    { MP_ROM_QSTR(MP_QSTR_writeblocks), MP_ROM_PTR(&flash_writeblocks_obj) },
    { MP_ROM_QSTR(MP_QSTR_ioctl), MP_ROM_PTR(&flash_ioctl_obj) },
};
static MP_DEFINE_CONST_DICT(flash_locals, flash_locals_table);

static MP_DEFINE_CONST_OBJ_TYPE(
    flash_type, MP_QSTR_Flash, MP_TYPE_FLAG_NONE,
    make_new, flash_make_new,
    locals_dict, &flash_locals
    );

#if SEALINK_DICE
MP_DECLARE_CONST_FUN_OBJ_0(board_program_uds_obj);  // board_dice.c
MP_DECLARE_CONST_FUN_OBJ_0(board_reset_obj);
#endif

static const mp_rom_map_elem_t board_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__board) },
    { MP_ROM_QSTR(MP_QSTR_Flash), MP_ROM_PTR(&flash_type) },
    #if SEALINK_DICE
    { MP_ROM_QSTR(MP_QSTR_program_uds), MP_ROM_PTR(&board_program_uds_obj) },
    { MP_ROM_QSTR(MP_QSTR_reset), MP_ROM_PTR(&board_reset_obj) },
    #endif
};
static MP_DEFINE_CONST_DICT(board_module_globals, board_module_globals_table);

const mp_obj_module_t board_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&board_module_globals,
};
MP_REGISTER_MODULE(MP_QSTR__board, board_module);

// Mount the flash at / (formatting a blank image).
static void flash_mount(void) {
    mp_obj_t bdev = MP_OBJ_FROM_PTR(&flash_obj);
    mp_obj_t lfs = MP_OBJ_FROM_PTR(&mp_type_vfs_lfs2);
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        mp_obj_t vfs;
        nlr_buf_t inner;
        if (nlr_push(&inner) == 0) {
            vfs = mp_call_function_1(lfs, bdev);
            nlr_pop();
        } else {
            // Not a filesystem yet (a blank image): format it.
            mp_obj_t mkfs = mp_load_attr(lfs, MP_QSTR_mkfs);
            mp_call_function_1(mkfs, bdev);
            vfs = mp_call_function_1(lfs, bdev);
        }
        mp_obj_t mount_args[2] = { vfs, MP_OBJ_NEW_QSTR(MP_QSTR__slash_) };
        mp_vfs_mount(2, mount_args, (mp_map_t *)&mp_const_empty_map);
        MP_STATE_VM(vfs_cur) = MP_STATE_VM(vfs_mount_table);
        nlr_pop();
    } else {
        mp_printf(&mp_plat_print, "flash: not mounted\n");
        mp_obj_print_exception(&mp_plat_print, MP_OBJ_FROM_PTR(nlr.ret_val));
    }
}

void board_before_repl(void) {
    flash_open();
    if (flash_handle >= 0) {
        flash_mount();
    }
    #if SEALINK_DICE
    board_dice_boot();  // measures and derives before any Python code runs
    #endif
    if (flash_handle >= 0) {
        pyexec_file_if_exists("boot.py");
        if (pyexec_mode_kind == PYEXEC_MODE_FRIENDLY_REPL) {
            pyexec_file_if_exists("main.py");
        }
    }
}
