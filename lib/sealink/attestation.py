# sealink.attestation: the device's measured identity, as the DICE boot stage left it.
#
#   identity() -> (static_key, evidence), or None on firmware without a boot stage or
#                 a device booted without a UDS; AttestationError if the boot stage
#                 refused (a UDS of the wrong size, more measurements than it logs)
#
# On firmware with the boot stage (the QEMU boards, the unix firmware with -X uds=)
# the static key was derived from the UDS and the measurements of what runs, and the
# evidence (a COSE_Sign1 EAT, docs/attestation.md) was signed by the DeviceID key,
# which is gone.  Use them together:
#     ident = attestation.identity()
#     ks = Keystore("/keystore.json", measured_secret=ident[0])
#     device = Device(radio, ks, {"evidence": ident[1], ...})

from sealink.errors import SealinkError

_REFUSED = {-1: "the UDS is not 32 bytes", -2: "more measurements than the log holds"}


class AttestationError(SealinkError):
    # The boot stage ran and refused: this boot has no measured identity.
    pass


def identity():
    try:
        import _sealink_crypto
    except ImportError:
        return None
    dice = getattr(_sealink_crypto, "dice", None)
    state = dice() if dice is not None else None
    if state is None:
        return None
    if state[0] != 2:
        raise AttestationError("DICE boot stage: %s" % _REFUSED.get(state[0], state[0]))
    return state[1], state[2]
