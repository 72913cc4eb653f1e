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
# layout): checking and sliding it touch only small integers (a 64-bit bitmap in one int
# would be a big integer on a 32-bit MicroPython, built anew on every shift).

from sealink.errors import SealinkError

_COUNTER_LIMIT = (1 << 64) - 1  # the Noise nonce 2^64-1 is reserved (never a counter)


class ReplayError(SealinkError):
    # A counter already seen, or older than the window.
    pass


class ReplayWindow:
    # State in one bytearray, the layout _sealink_crypto.open_data shares (the firmware's
    # message path runs these same steps in C): 8 bytes, the next counter expected
    # (highest accepted + 1, little-endian), then the ring of bits.

    def __init__(self, size=64):
        if size < 1:
            raise ValueError("window size must be positive")
        size = (size + 7) & ~7  # whole bytes
        self.size = size
        self.accepted = 0  # counters accepted (moves only with update())
        self.state = bytearray(8 + (size >> 3))

    @property
    def highest(self):
        """The highest counter accepted so far (-1: none)."""
        return int.from_bytes(self.state[:8], "little") - 1

    @highest.setter
    def highest(self, n):
        self.state[:8] = (n + 1).to_bytes(8, "little")

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
        self._check(n, self.highest)

    def _check(self, n, highest):
        if n < 0 or n >= _COUNTER_LIMIT:
            raise ReplayError("counter out of range")
        if n > highest:
            return
        if highest - n >= self.size:
            raise ReplayError("counter %d is older than the replay window" % n)
        i = n % self.size
        if self.state[8 + (i >> 3)] & (1 << (i & 7)):
            raise ReplayError("counter %d replayed" % n)

    def update(self, n):
        state, size = self.state, self.size
        highest = int.from_bytes(state[:8], "little") - 1
        self._check(n, highest)
        if n > highest:
            # Counters highest+1 .. n-1 were not seen: clear their slots (all of them
            # once the jump reaches the window's size).
            if n - highest >= size:
                for j in range(8, len(state)):
                    state[j] = 0
            else:
                for m in range(highest + 1, n):
                    i = m % size
                    state[8 + (i >> 3)] &= ~(1 << (i & 7))
            state[:8] = (n + 1).to_bytes(8, "little")
        i = n % size
        state[8 + (i >> 3)] |= 1 << (i & 7)
        self.accepted += 1
