# Fragmentation and reassembly of messages larger than a link's frame (handshake
# messages and large payloads over 20-byte BLE writes or 51-byte LoRa frames).
#
# A fragment carries 2 bytes in front of its chunk:
#   byte 0: message id (0..255, wraps)
#   byte 1: index (high nibble) and count - 1 (low nibble): at most 16 fragments.
# Reassembly keeps a bounded number of partial messages, evicts them after a timeout,
# ignores duplicate fragments, rejects inconsistent ones, and reports what is missing
# so the sender can retransmit just that.

from sealink.errors import SealinkError

FRAGMENT_HEADER = 2
MAX_FRAGMENTS = 16
DONE_MEMORY = 16  # completed ids remembered (ids wrap at 256)


class FragmentError(SealinkError):
    # A malformed or inconsistent fragment, or a message that cannot be fragmented.
    pass


def split(message, msg_id, chunk_size):
    """The fragments (each header + chunk) of `message`, chunk_size bytes per chunk."""
    if chunk_size < 1:
        raise FragmentError("link MTU too small to carry fragments")
    count = (len(message) + chunk_size - 1) // chunk_size or 1
    if count > MAX_FRAGMENTS:
        raise FragmentError("message of %d bytes needs %d fragments at %d bytes each "
                            "(limit %d)" % (len(message), count, chunk_size, MAX_FRAGMENTS))
    out = []
    for i in range(count):
        chunk = message[i * chunk_size:(i + 1) * chunk_size]
        out.append(bytes((msg_id & 0xFF, (i << 4) | (count - 1))) + chunk)
    return out


def parse(fragment):
    """(msg_id, index, count, chunk) of one fragment."""
    if len(fragment) < FRAGMENT_HEADER + 1:
        raise FragmentError("fragment truncated")
    msg_id = fragment[0]
    index = fragment[1] >> 4
    count = (fragment[1] & 0x0F) + 1
    if index >= count:
        raise FragmentError("fragment index %d beyond count %d" % (index, count))
    return msg_id, index, count, bytes(fragment[FRAGMENT_HEADER:])


# A partial message is kept this long: under EU868's 1 % duty cycle an SF12 sender's
# 51-byte fragments are 247 s apart, so a 4-fragment message takes 12 minutes.
PARTIAL_TIMEOUT_MS = 900000


class Reassembler:
    def __init__(self, max_messages=2, max_message_size=4096, timeout_ms=PARTIAL_TIMEOUT_MS):
        self.max_messages = max_messages
        self.max_message_size = max_message_size
        self.timeout_ms = timeout_ms
        self._partial = {}  # msg_id -> [count, chunks list, size, started_ms, arrival seq]
        self._seq = 0
        # The last messages completed, [(id, message)]: late copies of their fragments
        # are duplicates; a late copy of fragment 0 hands the message up once more, so
        # a retransmitted handshake message is answered again.
        self._done = []
        self.duplicates = 0
        self.evicted = 0

    def feed(self, fragment, now_ms):
        """Add one fragment; return the whole message when it completes, else None."""
        msg_id, index, count, chunk = parse(fragment)
        self.expire(now_ms)
        for done_id, message in self._done:
            if done_id == msg_id:
                self.duplicates += 1
                return message if index == 0 else None
        entry = self._partial.get(msg_id)
        if entry is None:
            if len(self._partial) >= self.max_messages:
                oldest = min(self._partial, key=lambda k: self._partial[k][4])
                del self._partial[oldest]
                self.evicted += 1
            self._seq += 1
            entry = [count, [None] * count, 0, now_ms, self._seq]
            self._partial[msg_id] = entry
        elif entry[0] != count:
            raise FragmentError("fragment count changed within message %d" % msg_id)
        chunks = entry[1]
        if chunks[index] is not None:
            if chunks[index] != chunk:
                raise FragmentError("conflicting fragment %d of message %d" % (index, msg_id))
            self.duplicates += 1
            return None
        if entry[2] + len(chunk) > self.max_message_size:
            del self._partial[msg_id]
            raise FragmentError("reassembled message would exceed %d bytes"
                                % self.max_message_size)
        chunks[index] = chunk
        entry[2] += len(chunk)
        if None in chunks:
            return None
        del self._partial[msg_id]
        message = b"".join(chunks)
        self._done.append((msg_id, message))
        if len(self._done) > DONE_MEMORY:
            self._done.pop(0)
        return message

    def missing(self, msg_id):
        """Indices still missing for a partial message ([] if unknown or complete)."""
        entry = self._partial.get(msg_id)
        if entry is None:
            return []
        return [i for i, c in enumerate(entry[1]) if c is None]

    def expire(self, now_ms):
        for msg_id in list(self._partial):
            if now_ms - self._partial[msg_id][3] > self.timeout_ms:
                del self._partial[msg_id]
                self.evicted += 1
