// The DICE boot stage of Sealink's unix firmware (layer 0), run by the port's
// MICROPY_UNIX_BEFORE_PYTHON hook (patch unix/0001) before any Python code.
//
// `micropython -X uds=PATH` names the Unique Device Secret (a 32-byte file).  It
// measures, in order: `firmware` (the running executable, /proc/self/exe, whose
// SHA-256 is what tools/reference.py computes from build/UNIX/micropython), then
// ./boot.py, ./main.py and ./config.json, those that exist.  The rest is dice.c's.
// Without -X uds= nothing is measured and the device has no DICE identity.

#include "py/mpconfig.h"

#if defined(MICROPY_UNIX_BEFORE_PYTHON) && defined(SEALINK_VERSION)

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "py/misc.h"

#include "lib/crypto-algorithms/sha256.h"
#include "monocypher.h"
#include "dice.h"

extern const char *mp_unix_uds_path;

static int file_digest(const char *path, uint8_t digest[32]) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return 0;
    }
    CRYAL_SHA256_CTX ctx;
    sha256_init(&ctx);
    uint8_t buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
        sha256_update(&ctx, buf, n);
    }
    fclose(f);
    sha256_final(&ctx, digest);
    return 1;
}

void sealink_unix_boot(void) {
    if (mp_unix_uds_path == NULL) {
        return;  // not provisioned
    }
    // read(2) straight into our buffer: stdio would leave a copy in its own buffer,
    // freed but never wiped (tests/test_dice.py found one there).
    uint8_t uds[SEALINK_DICE_UDS_SIZE + 1];
    size_t uds_len = 0;
    int fd = open(mp_unix_uds_path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n;
        while (uds_len < sizeof(uds)  // one byte more: a longer file is refused
               && (n = read(fd, uds + uds_len, sizeof(uds) - uds_len)) > 0) {
            uds_len += (size_t)n;
        }
        close(fd);
    }
    sealink_dice_begin();
    uint8_t digest[32];
    if (file_digest("/proc/self/exe", digest)) {
        sealink_dice_extend("firmware", digest);
    }
    static const char *const files[] = { "boot.py", "main.py", "config.json" };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); ++i) {
        if (file_digest(files[i], digest)) {
            sealink_dice_extend(files[i], digest);
        }
    }
    sealink_dice_finish(uds, uds_len,
        "sealink-" SEALINK_VERSION "+micropython-" MICROPY_VERSION_STRING);
    crypto_wipe(uds, sizeof(uds));
}

#else
typedef int sealink_dice_unix_unused;  // (not the unix port: nothing to build)
#endif
