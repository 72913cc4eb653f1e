# Sealink frames on the air.  Every frame starts with the same 3 bytes:
#
#   byte 0: kind (3 high bits) | kind-specific bits (5 low bits)
#   bytes 1-2: session id, big-endian (demultiplexes the devices sharing a radio)
#
# kind HANDSHAKE: bits = pattern (2 bits: XX 0, KK 1, IK 2, XK 3) << 3 | message index
#                 (3 bits);
#                 the rest is the Noise handshake message.
# kind DATA / CONTROL: bits = counter bits 12..8; byte 3 = counter bits 7..0; the rest
#                 is ChaCha20-Poly1305 ciphertext and tag of the payload, with the
#                 4 header bytes as associated data.  4 + 16 = 20 bytes of overhead.
# kind RELIABLE: as DATA; the plaintext is a sealink.reliable message (id + payload),
#                 answered by an ack in a CONTROL frame.
# kind FRAGMENT:  bits = 0; the rest is one fragment (sealink.fragment) of a frame that
#                 did not fit the link, taken without its session id.
# kind REJECT:    bits = reason; no body, no authentication: a hint that the receiver has
#                 no session under that id, so the sender should handshake again.

from sealink.errors import SealinkError

HEADER = 3
DATA_HEADER = 4
COUNTER_BITS = 13

KIND_HANDSHAKE = 1
KIND_DATA = 2
KIND_CONTROL = 3
KIND_FRAGMENT = 4
KIND_REJECT = 5
KIND_RELIABLE = 6

PATTERN_CODES = {"XX": 0, "KK": 1, "IK": 2, "XK": 3}
PATTERN_NAMES = {0: "XX", 1: "KK", 2: "IK", 3: "XK"}

REJECT_UNKNOWN_SESSION = 1
REJECT_HANDSHAKE_FAILED = 2
REJECT_REVOKED = 3


class FrameError(SealinkError):
    # A frame that is truncated, of an unknown kind, or malformed.
    pass


def header(kind, bits, sid):
    return bytes(((kind << 5) | (bits & 0x1F), (sid >> 8) & 0xFF, sid & 0xFF))


def parse(frame):
    """(kind, bits, sid, body) of a frame; FrameError when malformed."""
    kind, bits, sid = peek(frame)
    return kind, bits, sid, bytes(frame[HEADER:])


def peek(frame):
    """(kind, bits, sid) of a frame, checked as parse() checks it, without copying its
    body; FrameError when malformed."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise FrameError("frame must be bytes")
    size = len(frame) - HEADER
    if size < 0:
        raise FrameError("frame of %d bytes is shorter than the header" % len(frame))
    kind = frame[0] >> 5
    bits = frame[0] & 0x1F
    sid = (frame[1] << 8) | frame[2]
    if kind == KIND_HANDSHAKE:
        if (bits >> 3) not in PATTERN_NAMES:
            raise FrameError("unknown handshake pattern code %d" % (bits >> 3))
        if not size:
            raise FrameError("empty handshake frame")
    elif kind in (KIND_DATA, KIND_CONTROL, KIND_RELIABLE):
        if size < 1 + 16:
            raise FrameError("data frame truncated")
    elif kind == KIND_FRAGMENT:
        if size < 3:
            raise FrameError("fragment frame truncated")
    elif kind == KIND_REJECT:
        if size:
            raise FrameError("reject frame carries no body")
    else:
        raise FrameError("unknown frame kind %d" % kind)
    return kind, bits, sid


def handshake_frame(pattern, index, sid, message):
    return header(KIND_HANDSHAKE, (PATTERN_CODES[pattern] << 3) | index, sid) + message


def data_header(kind, sid, counter):
    truncated = counter & ((1 << COUNTER_BITS) - 1)
    return header(kind, truncated >> 8, sid) + bytes((truncated & 0xFF,))


def truncated_counter(bits, body):
    return (bits << 8) | body[0]
