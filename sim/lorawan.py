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


# --- Over-the-air activation (LoRaWAN 1.0.x) ---------------------------------------------
#
#   JoinRequest = 0x00 | AppEUI (8, LE) | DevEUI (8, LE) | DevNonce (2, LE) | MIC
#   JoinAccept  = 0x20 | AES-128-ECB-decrypt(AppKey, AppNonce (3) | NetID (3) |
#                 DevAddr (4) | DLSettings | RxDelay | MIC)   (the device encrypts to read)
#   MIC         = AES-CMAC(AppKey, MHDR | fields)[0:4]
#   NwkSKey / AppSKey = AES-128-ECB(AppKey, 0x01 / 0x02 | AppNonce | NetID | DevNonce | 0...)

JOIN_REQUEST, JOIN_ACCEPT = 0x00, 0x20


def _cmac(key: bytes, data: bytes) -> bytes:
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()[:4]


def _ecb(key: bytes, data: bytes, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def join_request(app_eui: bytes, dev_eui: bytes, dev_nonce: int, app_key: bytes) -> bytes:
    msg = bytes((JOIN_REQUEST,)) + app_eui[::-1] + dev_eui[::-1] + struct.pack("<H", dev_nonce)
    return msg + _cmac(app_key, msg)


def read_join_request(phy: bytes) -> tuple[bytes, bytes, int]:
    """(AppEUI, DevEUI, DevNonce) of a join request (its MIC is checked by the caller,
    who knows the device's AppKey: check_join_request)."""
    if len(phy) != 23 or phy[0] != JOIN_REQUEST:
        raise FrameError("not a join request")
    return phy[1:9][::-1], phy[9:17][::-1], struct.unpack_from("<H", phy, 17)[0]


def check_join_request(phy: bytes, app_key: bytes) -> None:
    if not hmac.compare_digest(_cmac(app_key, phy[:-4]), phy[-4:]):
        raise FrameError("join request MIC does not verify")


def join_accept(app_key: bytes, app_nonce: int, net_id: int, dev_addr: int,
                rx_delay: int = 1) -> bytes:
    fields = (app_nonce.to_bytes(3, "little") + net_id.to_bytes(3, "little")
              + struct.pack("<I", dev_addr) + bytes((0x00, rx_delay)))
    mic = _cmac(app_key, bytes((JOIN_ACCEPT,)) + fields)
    return bytes((JOIN_ACCEPT,)) + _ecb(app_key, fields + mic, decrypt=True)


def read_join_accept(phy: bytes, app_key: bytes) -> tuple[int, int, int]:
    """(AppNonce, NetID, DevAddr) of a join accept for this AppKey; FrameError if not."""
    if len(phy) != 17 or phy[0] != JOIN_ACCEPT:
        raise FrameError("not a join accept")
    plain = _ecb(app_key, phy[1:])
    fields, mic = plain[:-4], plain[-4:]
    if not hmac.compare_digest(_cmac(app_key, phy[:1] + fields), mic):
        raise FrameError("join accept MIC does not verify")
    return (int.from_bytes(fields[0:3], "little"), int.from_bytes(fields[3:6], "little"),
            struct.unpack_from("<I", fields, 6)[0])


def session_keys(app_key: bytes, app_nonce: int, net_id: int,
                 dev_nonce: int) -> tuple[bytes, bytes]:
    """(NwkSKey, AppSKey) an OTAA join derives."""
    tail = (app_nonce.to_bytes(3, "little") + net_id.to_bytes(3, "little")
            + struct.pack("<H", dev_nonce))
    return (_ecb(app_key, (b"\x01" + tail).ljust(16, b"\x00")),
            _ecb(app_key, (b"\x02" + tail).ljust(16, b"\x00")))
