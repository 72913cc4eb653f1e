# Sliding-window replay protection over 64-bit message counters (the scheme of IPsec
# ESP, RFC 4303 section 3.4.3, and DTLS), plus reconstruction of a full counter from
# the few low bits a radio frame carries (as QUIC does for packet numbers, RFC 9000
# appendix A.3).
#
# Use: n = window.expand(bits_on_wire, nbits); window.check(n); authenticate the
# frame with nonce n; only then window.update(n).  Checking before and updating only
# after authentication keeps forged frames from moving the window.

from sealink.errors import SealinkError


class ReplayError(SealinkError):
    # A counter already seen, or older than the window.
    pass


class ReplayWindow:
    def __init__(self, size=64):
        if size < 1:
            raise ValueError("window size must be positive")
        self.size = size
        self.highest = -1  # highest counter accepted so far
        self._bitmap = 0  # bit i set: counter highest - i was accepted

    def expand(self, truncated, nbits):
        """The counter closest to highest+1 whose low nbits equal `truncated`."""
        expected = self.highest + 1
        span = 1 << nbits
        half = span >> 1
        candidate = (expected & ~(span - 1)) | truncated
        if candidate <= expected - half and candidate + span < (1 << 64):
            candidate += span
        elif candidate > expected + half and candidate >= span:
            candidate -= span
        return candidate

    def check(self, n):
        if n < 0 or n >= (1 << 64) - 1:
            raise ReplayError("counter out of range")
        if n > self.highest:
            return
        offset = self.highest - n
        if offset >= self.size:
            raise ReplayError("counter %d is older than the replay window" % n)
        if (self._bitmap >> offset) & 1:
            raise ReplayError("counter %d replayed" % n)

    def update(self, n):
        self.check(n)
        if n > self.highest:
            shift = n - self.highest
            self._bitmap = ((self._bitmap << shift) | 1) & ((1 << self.size) - 1) \
                if shift < self.size else 1
            self.highest = n
        else:
            self._bitmap |= 1 << (self.highest - n)
