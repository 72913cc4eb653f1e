# Optional reliable delivery for application messages over a session: message ids,
# acknowledgements, retransmission with exponential backoff, and duplicate
# suppression, so the application sees each message exactly once.
#
# A reliable message is [id (1 byte)] + payload inside an encrypted frame; an ack is
# [ACK] + the ids acknowledged, inside an encrypted control frame.  Ids wrap at 256;
# at most MAX_IN_FLIGHT are outstanding and the receiver remembers the last
# DEDUP_MEMORY ids delivered, so a wrapped id is never mistaken for a duplicate.

from sealink.errors import SealinkError

MAX_IN_FLIGHT = 8
DEDUP_MEMORY = 128
CONTROL_ACK = 1


class DeliveryError(SealinkError):
    # Too many messages in flight, or a malformed reliable message or ack.
    pass


class ReliableSender:
    def __init__(self, retry_ms=2000, max_retries=6, max_in_flight=MAX_IN_FLIGHT):
        self.retry_ms = retry_ms
        self.max_retries = max_retries
        self.max_in_flight = max_in_flight
        self._next_id = 0
        self._pending = {}  # id -> [body, sent_ms, tries]
        self.failed = []  # payloads given up on after max_retries
        self.acked = []  # ids acknowledged, for the application to collect
        self.failed_ids = []  # ids given up on, for the application to collect
        self.last_id = None
        self.retransmissions = 0

    def submit(self, payload, now_ms, msg_id=None):
        """Queue a payload; returns the body to send now (id + payload).  `msg_id`: the
        id to use (a device gives each message one that it keeps across sessions);
        by default the next one in turn."""
        if len(self._pending) >= self.max_in_flight:
            raise DeliveryError("%d messages already in flight" % len(self._pending))
        if msg_id is None:
            msg_id = self._next_id
            self._next_id = (self._next_id + 1) & 0xFF
        elif msg_id in self._pending:
            raise DeliveryError("message id %d already in flight" % msg_id)
        body = bytes((msg_id,)) + payload
        self._pending[msg_id] = [body, now_ms, 0]
        self.last_id = msg_id
        return body

    def acknowledge(self, ack_body):
        """Process an ack control body; returns how many messages it completed."""
        if len(ack_body) < 2 or ack_body[0] != CONTROL_ACK:
            raise DeliveryError("malformed ack")
        done = 0
        for msg_id in ack_body[1:]:
            if self._pending.pop(msg_id, None) is not None:
                self.acked.append(msg_id)
                done += 1
        return done

    def pending(self, now_ms):
        """Every body not yet acknowledged, to send again now: for a medium that reaches
        the peer only in the receive window after the peer transmitted (the caller then
        sends on each of the peer's frames instead of on a timer).  Each counts as a
        try; after max_retries the message is given up on, as with poll()."""
        out = []
        for msg_id in list(self._pending):
            entry = self._pending[msg_id]
            if self.max_retries is not None and entry[2] >= self.max_retries:
                del self._pending[msg_id]
                self.failed.append(entry[0][1:])
                self.failed_ids.append(msg_id)
                continue
            entry[1] = now_ms
            entry[2] += 1
            self.retransmissions += 1
            out.append(entry[0])
        return out

    def poll(self, now_ms):
        """Bodies to retransmit now (exponential backoff, capped at 8x)."""
        out = []
        for msg_id in list(self._pending):
            entry = self._pending[msg_id]
            if now_ms - entry[1] < self.retry_ms << min(entry[2], 3):
                continue
            if self.max_retries is not None and entry[2] >= self.max_retries:
                del self._pending[msg_id]
                self.failed.append(entry[0][1:])
                self.failed_ids.append(msg_id)
                continue
            entry[1] = now_ms
            entry[2] += 1
            self.retransmissions += 1
            out.append(entry[0])
        return out

    @property
    def in_flight(self):
        return len(self._pending)


class ReliableReceiver:
    last_id = None  # the id of the last message accepted (class default: no dict entry)

    def __init__(self):
        self._seen = []  # ids delivered, oldest first

    def accept(self, body):
        """(payload or None if a duplicate, ack body to send back)."""
        if len(body) < 1:
            raise DeliveryError("reliable message without an id")
        msg_id = body[0]
        self.last_id = msg_id  # for an application that remembers ids across sessions
        ack = bytes((CONTROL_ACK, msg_id))
        if msg_id in self._seen:
            return None, ack
        self._seen.append(msg_id)
        if len(self._seen) > DEDUP_MEMORY:
            self._seen.pop(0)
        return body[1:], ack
