# LoRa time on air, from the Semtech SX127x/SX126x datasheet formula:
#
#   T_sym = 2^SF / BW
#   n_payload = 8 + max(ceil((8 PL - 4 SF + 28 + 16 CRC - 20 IH) / (4 (SF - 2 DE))) (CR + 4), 0)
#   ToA = (n_preamble + 4.25 + n_payload) T_sym
#
# with DE (low data rate optimisation) on when T_sym >= 16 ms, CR 1..4 for 4/5..4/8,
# IH 1 for implicit header.  Check: SF7, 125 kHz, 20 bytes, 8-symbol preamble, CR 4/5,
# CRC on, explicit header -> 56.576 ms.


# Sealink frames on a LoRa channel are LoRaWAN "proprietary" frames: one MHDR byte in
# front, MType 111 (so LoRaWAN network servers ignore them), RFU 101 (Sealink), Major
# 00.  A frame whose first byte is anything else (a LoRaWAN join or data frame, another
# vendor's proprietary frame) is not Sealink's and is dropped unread: no answer, no
# handshake, no trial decryption.
MHDR = 0xF4

# The largest Sealink frame (after the MHDR) per spreading factor at 125 kHz: the
# region's largest PHYPayload at that data rate (LoRaWAN Regional Parameters RP002:
# MACPayload limit M, plus MHDR and MIC, M + 5), less the MHDR.  A proprietary frame
# has no FHDR, FPort nor MIC: the whole PHYPayload is ours, and its time on air is that
# of the largest LoRaWAN frame the region allows.  Index: SF - 7 (SF7..SF12).
#   EU868 DR5..DR0 (SF7..SF12): M = 230, 230, 123, 59, 59, 59
#   US915 DR3..DR0 (SF7..SF10): M = 250, 133, 61, 19 (400 ms dwell time)
FRAME_LIMITS = {"EU868": b"\xea\xea\x7f\x3f\x3f\x3f", "US915": b"\xfe\x89\x41\x17"}


def max_payload(sf, region="EU868"):
    """The largest Sealink frame at spreading factor `sf` (125 kHz) in `region`."""
    limits = FRAME_LIMITS.get(region)
    if limits is None:
        raise ValueError("region %r is not one of %s" % (region, sorted(FRAME_LIMITS)))
    if not isinstance(sf, int) or not 7 <= sf < 7 + len(limits):
        raise ValueError("spreading factor %r is not 7..%d in %s"
                         % (sf, 6 + len(limits), region))
    return limits[sf - 7]


def wrap(frame):
    """The PHYPayload carrying a Sealink frame."""
    return bytes((MHDR,)) + bytes(frame)


def unwrap(phy):
    """The Sealink frame in a PHYPayload, or None when it is not one of ours."""
    if len(phy) < 2 or phy[0] != MHDR:
        return None
    return bytes(phy[1:])


def time_on_air_us(payload_len, sf, bw_hz=125000, cr=1, preamble=8, crc=True,
                   implicit_header=False):
    t_sym_us = (1 << sf) * 1000000 // bw_hz
    de = 1 if t_sym_us >= 16000 else 0
    num = 8 * payload_len - 4 * sf + 28 + (16 if crc else 0) - (20 if implicit_header else 0)
    den = 4 * (sf - 2 * de)
    blocks = -(-num // den) if num > 0 else 0  # ceil for positive, 0 otherwise
    n_payload = 8 + blocks * (cr + 4)
    # (preamble + 4.25) symbols, in quarter symbols to stay in integers.
    return ((4 * preamble + 17) * t_sym_us) // 4 + n_payload * t_sym_us
