"""LoRaWAN 1.0.x data frames, for the modeled LoRaWAN network (sim.network_server) and
the RAK3172 model's LoRaWAN mode: an ABP session's data frames, built and checked as
the specification says (LoRaWAN 1.0.4, section 4), with AES from `cryptography`:

    PHYPayload = MHDR | FHDR | FPort | FRMPayload | MIC
    FHDR       = DevAddr (4, LE) | FCtrl (1) | FCnt (2, LE) | FOpts (0..15)
    FRMPayload : AES-128 in counter mode, A_i = 0x01 | 0^4 | Dir | DevAddr | FCnt(4) |
                 0x00 | i, under the AppSKey (FPort > 0)
    MIC        : AES-CMAC(NwkSKey, B0 | MHDR..FRMPayload)[0:4], B0 = 0x49 | 0^4 | Dir |
                 DevAddr | FCnt(4) | 0x00 | len(msg)

The tests check this codec against an independent implementation
(lora-mote-emulator) before the simulation relies on it.  No join procedure: devices
are activated by personalization (the keys a network server would derive at join).
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

UNCONFIRMED_UP, UNCONFIRMED_DOWN, CONFIRMED_UP, CONFIRMED_DOWN = 0x40, 0x60, 0x80, 0xA0
UP, DOWN = 0, 1


class FrameError(ValueError):
    """Not a LoRaWAN data frame of this session (malformed, another DevAddr, bad MIC)."""


@dataclass
class DataFrame:
    mtype: int
    dev_addr: int
    fcnt: int
    fport: int | None
    payload: bytes
    ack: bool = False


def _blocks(first: int, direction: int, dev_addr: int, fcnt: int, last: int) -> bytes:
    return struct.pack("<B4xBIIxB", first, direction, dev_addr, fcnt, last)


def _crypt(key: bytes, direction: int, dev_addr: int, fcnt: int, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    stream = b"".join(encryptor.update(_blocks(0x01, direction, dev_addr, fcnt, i + 1))
                      for i in range((len(data) + 15) // 16))
    return bytes(a ^ b for a, b in zip(data, stream, strict=False))


def _mic(nwk_s_key: bytes, direction: int, dev_addr: int, fcnt: int, msg: bytes) -> bytes:
    c = CMAC(algorithms.AES(nwk_s_key))
    c.update(_blocks(0x49, direction, dev_addr, fcnt, len(msg)) + msg)
    return c.finalize()[:4]


def encode(mtype: int, dev_addr: int, fcnt: int, fport: int, payload: bytes,
           nwk_s_key: bytes, app_s_key: bytes, ack: bool = False) -> bytes:
    direction = DOWN if mtype in (UNCONFIRMED_DOWN, CONFIRMED_DOWN) else UP
    fctrl = 0x20 if ack else 0x00
    msg = (bytes((mtype,)) + struct.pack("<IBH", dev_addr, fctrl, fcnt & 0xFFFF)
           + bytes((fport,)) + _crypt(app_s_key, direction, dev_addr, fcnt, payload))
    return msg + _mic(nwk_s_key, direction, dev_addr, fcnt, msg)


def decode(phy: bytes, nwk_s_key: bytes, app_s_key: bytes, fcnt_high: int = 0) -> DataFrame:
    """Check and decrypt a data frame; `fcnt_high`: the upper 16 bits of the 32-bit
    frame counter the receiver expects."""
    if len(phy) < 12:
        raise FrameError("shorter than a data frame")
    mtype = phy[0]
    if mtype not in (UNCONFIRMED_UP, UNCONFIRMED_DOWN, CONFIRMED_UP, CONFIRMED_DOWN):
        raise FrameError(f"MHDR {mtype:#04x} is not a data frame")
    direction = DOWN if mtype in (UNCONFIRMED_DOWN, CONFIRMED_DOWN) else UP
    dev_addr, fctrl, fcnt16 = struct.unpack_from("<IBH", phy, 1)
    fopts = fctrl & 0x0F
    fcnt = (fcnt_high << 16) | fcnt16
    msg, mic = phy[:-4], phy[-4:]
    if not hmac.compare_digest(_mic(nwk_s_key, direction, dev_addr, fcnt, msg), mic):
        raise FrameError("MIC does not verify")
    rest = msg[8 + fopts:]
    if not rest:
        return DataFrame(mtype, dev_addr, fcnt, None, b"", bool(fctrl & 0x20))
    return DataFrame(mtype, dev_addr, fcnt, rest[0],
                     _crypt(app_s_key, direction, dev_addr, fcnt, rest[1:]),
                     bool(fctrl & 0x20))


def dev_addr_of(phy: bytes) -> int | None:
    """The DevAddr of a data frame (None for anything else)."""
    if len(phy) < 12 or phy[0] not in (UNCONFIRMED_UP, UNCONFIRMED_DOWN, CONFIRMED_UP,
                                       CONFIRMED_DOWN):
        return None
    return struct.unpack_from("<I", phy, 1)[0]
