// os.urandom for Sealink's QEMU boards, included into extmod/modos.c through
// MICROPY_PY_OS_INCLUDEFILE.  The bytes come from the host's /dev/urandom over
// semihosting (board_hal.c): the emulated SoCs have no TRNG, and a fixed or
// time-derived seed would make every guest's keys predictable.

#include "py/mperrno.h"

static mp_obj_t mp_os_urandom(mp_obj_t num) {
    mp_int_t n = mp_obj_get_int(num);
    if (n < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("negative length"));
    }
    vstr_t vstr;
    vstr_init_len(&vstr, n);
    if (board_random_fill((uint8_t *)vstr.buf, n) != 0) {
        vstr_clear(&vstr);
        mp_raise_OSError(MP_EIO);
    }
    return mp_obj_new_bytes_from_vstr(&vstr);
}
static MP_DEFINE_CONST_FUN_OBJ_1(mp_os_urandom_obj, mp_os_urandom);
