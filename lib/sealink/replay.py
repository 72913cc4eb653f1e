# Sliding-window replay protection over 64-bit message counters (the scheme of IPsec
# ESP, RFC 4303 section 3.4.3, and DTLS), plus reconstruction of a full counter from
# the few low bits a radio frame carries (as QUIC does for packet numbers, RFC 9000
# appendix A.3).
#
# Use: n = window.expand(bits_on_wire, nbits); window.check(n); authenticate the
# frame with nonce n; only then window.update(n).  Checking before and updating only
# after authentication keeps forged frames from moving the window.
#
# The window is a ring of bits in a bytearray, indexed by counter mod size (RFC 6479's
# layout): checking and sliding it touch only small integers, so a device allocates
# nothing per frame for it (a 64-bit bitmap in one int would be a big integer on a
# 32-bit MicroPython, built anew on every shift).

from sealink.errors import SealinkError

_COUNTER_LIMIT = (1 << 64) - 1  # the Noise nonce 2^64-1 is reserved (never a counter)


class ReplayError(SealinkError):
    # A counter already seen, or older than the window.
    pass


class ReplayWindow:
    def __init__(self, size=64):
        if size < 1:
            raise ValueError("window size must be positive")
        size = (size + 7) & ~7  # whole bytes
        self.size = size
        self.highest = -1  # highest counter accepted so far
        self.accepted = 0  # counters accepted (moves only with update())
        self._bits = bytearray(size >> 3)  # bit n % size: counter n accepted

    def expand(self, truncated, nbits):
        """The counter closest to highest+1 whose low nbits equal `truncated`."""
        expected = self.highest + 1
        span = 1 << nbits
        half = span >> 1
        candidate = (expected & ~(span - 1)) | truncated
        if candidate <= expected - half and candidate + span < _COUNTER_LIMIT + 1:
            candidate += span
        elif candidate > expected + half and candidate >= span:
            candidate -= span
        return candidate

    def check(self, n):
        if n < 0 or n >= _COUNTER_LIMIT:
            raise ReplayError("counter out of range")
        if n > self.highest:
            return
        if self.highest - n >= self.size:
            raise ReplayError("counter %d is older than the replay window" % n)
        i = n % self.size
        if self._bits[i >> 3] & (1 << (i & 7)):
            raise ReplayError("counter %d replayed" % n)

    def update(self, n):
        self.check(n)
        bits, size = self._bits, self.size
        if n > self.highest:
            # Counters highest+1 .. n-1 were not seen: clear their slots (all of them
            # once the jump reaches the window's size).
            if n - self.highest >= size:
                for j in range(len(bits)):
                    bits[j] = 0
            else:
                for m in range(self.highest + 1, n):
                    i = m % size
                    bits[i >> 3] &= ~(1 << (i & 7))
            self.highest = n
        i = n % size
        bits[i >> 3] |= 1 << (i & 7)
        self.accepted += 1
