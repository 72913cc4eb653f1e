# LoRa time on air, from the Semtech SX127x/SX126x datasheet formula:
#
#   T_sym = 2^SF / BW
#   n_payload = 8 + max(ceil((8 PL - 4 SF + 28 + 16 CRC - 20 IH) / (4 (SF - 2 DE))) (CR + 4), 0)
#   ToA = (n_preamble + 4.25 + n_payload) T_sym
#
# with DE (low data rate optimisation) on when T_sym >= 16 ms, CR 1..4 for 4/5..4/8,
# IH 1 for implicit header.  Check: SF7, 125 kHz, 20 bytes, 8-symbol preamble, CR 4/5,
# CRC on, explicit header -> 56.576 ms.


# EU868 maximum payload per spreading factor at 125 kHz (LoRaWAN regional parameters,
# DR0-DR5); the gateway and the device drivers both hold frames to it.
EU868_MAX_PAYLOAD = {12: 51, 11: 51, 10: 51, 9: 115, 8: 222, 7: 222}


def max_payload(sf):
    try:
        return EU868_MAX_PAYLOAD[sf]
    except KeyError:
        raise ValueError("spreading factor %r is not 7..12" % (sf,)) from None


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
