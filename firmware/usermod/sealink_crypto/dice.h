// Sealink's DICE layer 0 (TCG DICE, as in RIoT): the boot stage measures what will
// run, derives the device's keys from the Unique Device Secret (UDS) and those
// measurements, endorses the measured key, then forgets the UDS.  docs/attestation.md.
#ifndef SEALINK_DICE_H
#define SEALINK_DICE_H

#include <stddef.h>
#include <stdint.h>

#define SEALINK_DICE_UDS_SIZE (32)

// Where the boot stage stands.
enum {
    SEALINK_DICE_OFF = 0,       // this boot measured nothing (no UDS provisioned)
    SEALINK_DICE_MEASURING = 1,
    SEALINK_DICE_READY = 2,     // keys derived, evidence signed, UDS forgotten
    SEALINK_DICE_BAD_UDS = -1,  // the UDS was not SEALINK_DICE_UDS_SIZE bytes
    SEALINK_DICE_LOG_FULL = -2, // more measurements than the log holds
};

// Start measuring (register = 32 zero bytes, empty event log).
void sealink_dice_begin(void);

// Record one measured component: register = SHA-256(register || digest).
void sealink_dice_extend(const char *name, const uint8_t digest[32]);

// SHA-256 of `data`, then sealink_dice_extend.
void sealink_dice_measure(const char *name, const uint8_t *data, size_t len);

// Derive and endorse: CDI = HMAC-SHA256(UDS, register); the Noise static key from the
// CDI; the DeviceID Ed25519 key from the UDS alone, which signs the evidence (a
// COSE_Sign1 EAT: the static public key, every measurement, the register, the
// firmware version).  The UDS is read from `uds` and never kept; the DeviceID secret
// and the CDI are wiped before this returns.  The caller wipes `uds`.
void sealink_dice_finish(const uint8_t *uds, size_t uds_len, const char *version);

int sealink_dice_state(void);

// HMAC-SHA256 (RFC 2104) over the firmware's SHA-256.
void sealink_hmac_sha256(uint8_t out[32], const uint8_t *key, size_t key_len,
    const uint8_t *msg, size_t msg_len);

// What layer 1 (Python) may see.
typedef struct {
    char name[12];
    uint8_t digest[32];
} sealink_dice_event_t;

const uint8_t *sealink_dice_static_key(void);  // 32 bytes, NULL unless READY
const uint8_t *sealink_dice_evidence(size_t *len);
const uint8_t *sealink_dice_register(void);
const uint8_t *sealink_dice_device_id(void);  // the DeviceID public key (32 bytes)
const sealink_dice_event_t *sealink_dice_log(size_t *count);

#endif
