# sealink.attestation: the device's measured identity, as the DICE boot stage left it.
#
#   identity() -> (static_key, evidence) or None
#
# On firmware with the boot stage (the QEMU boards, provisioned with a UDS) the static
# key was derived from the UDS and the measurements of what runs, and the evidence (a
# COSE_Sign1 EAT, docs/attestation.md) was signed by the DeviceID key, which is gone.
# Use them together:
#     ident = attestation.identity()
#     ks = Keystore("/keystore.json", measured_secret=ident[0])
#     device = Device(radio, ks, {"evidence": ident[1], ...})


def identity():
    try:
        import _sealink_crypto
    except ImportError:
        return None
    dice = getattr(_sealink_crypto, "dice", None)
    state = dice() if dice is not None else None
    if state is None or state[0] != 2:
        return None
    return state[1], state[2]
