"""Transports carry Sealink frames between the gateway and devices.

Each transport family is a module here, chosen by the scheme of a URL in the
gateway's configuration (`udp://`, `semtech-udp://`, `serial-at://`, `ble://`).
Every transport implements `FrameTransport`: it delivers each received frame with its
`Uplink` metadata to the gateway's callback, and sends a frame back to a device
`Address` (for LoRa, into the device's receive window).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Address:
    """Where a device was heard: transport name plus a transport-specific key
    (an IP address and port, a concentrator EUI, a BLE connection handle)."""

    transport: str
    key: Any


@dataclass
class Uplink:
    frame: bytes
    source: Address
    received_at: float  # time.time() on the gateway
    radio: dict[str, Any] = field(default_factory=dict)  # rssi, snr, datr, freq, ...


FrameHandler = Callable[[Uplink], Awaitable[None]]


class TransportError(Exception):
    """Bad input from a transport's medium (counted and dropped by the gateway)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class FrameTransport(Protocol):
    name: str
    max_frame: int  # largest frame the link carries
    # True when a device can be reached only in the receive window after its own
    # transmission (LoRaWAN class A): unacknowledged downlinks then ride on each uplink.
    needs_window: bool

    async def start(self, handler: FrameHandler) -> None: ...

    async def send(self, frame: bytes, to: Address, uplink: Uplink | None = None) -> None:
        """Send a frame to a device; `uplink` is the frame being answered, when the
        medium schedules replies relative to it (LoRa class A receive windows)."""
        ...

    async def stop(self) -> None: ...


RCVBUF = 8 << 20
BATCH = 256  # datagrams read per readiness event


class _Socket:
    """The socket's send side, as subclasses use it: sendto() that never blocks (a full
    send buffer drops the datagram, as UDP may; counted by the owner)."""

    def __init__(self, sock: socket.socket, on_drop: Callable[[str], None]):
        self._sock, self._on_drop = sock, on_drop

    def sendto(self, data: bytes, addr) -> None:
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._on_drop("send_buffer_full")
        except OSError:
            self._on_drop("send_error")


class DatagramTransportBase:
    """What the UDP-based transports share: the socket, drop counters, and batching.

    Each readiness event drains up to BATCH datagrams from the socket (asyncio's own
    datagram transport reads one per event loop turn), and one task hands the whole
    batch to the gateway in arrival order, so uplinks of a burst share one SQLite
    commit.  Subclasses implement datagram_received() and call _deliver().  Batch tasks
    are awaited on stop, so nothing accepted is cut off."""

    needs_window = False

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.drops: dict[str, int] = {}
        self._sock: socket.socket | None = None
        self._transport: _Socket | None = None
        self._handler: FrameHandler | None = None
        self._tasks: set[asyncio.Task] = set()
        self._pending: list[Uplink] = []
        self.endpoint: Any = None  # set: start() attaches to it instead of a socket
        self.bound: socket.socket | None = None  # set: start() reads this bound socket
        # The gateway's message path (Gateway._fast_uplink): takes a frame at once and
        # returns True, or returns False and the frame goes to the handler.
        self.fast_path: Callable[[Uplink], bool] | None = None

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    async def start(self, handler: FrameHandler) -> None:
        if self.endpoint is not None:
            await self.attach(handler, self.endpoint)
            return
        self._handler = handler
        if self.bound is not None:
            sock = self.bound  # bound for us (gateway/workers.py: one of a shard group)
            sock.setblocking(False)
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM)
            family, _, _, _, address = infos[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                # No SO_REUSEADDR: on UDP it would let another local socket bind the same
                # port and take devices' frames.  (A restart needs no TIME_WAIT reuse.)
                sock.bind(address)
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
        self._grow_receive_buffer(sock)
        self._sock = sock
        self._transport = _Socket(sock, self._drop)
        self.port = sock.getsockname()[1]
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _grow_receive_buffer(self, sock) -> None:
        """A burst from a fleet must wait in the kernel, not be dropped there: ask for
        RCVBUF bytes (SO_RCVBUFFORCE needs CAP_NET_ADMIN; otherwise the kernel caps the
        request at net.core.rmem_max)."""
        for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if option is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, RCVBUF)
                return
            except OSError:
                continue

    async def attach(self, handler: FrameHandler, endpoint: Any) -> None:
        """Start on an endpoint that is not a kernel socket: anything with
        `sendto(data, addr)`, which hands this transport its datagrams with `feed()`.
        The simulation's discrete-event runs use it (sim/datagram.py): a datagram in a
        kernel buffer is invisible to a loop deciding that every party is waiting."""
        self._handler = handler
        self._transport = endpoint

    def feed(self, data: bytes, addr) -> None:
        """One datagram from an attached endpoint, handled as if read from the socket."""
        self.datagram_received(data, addr)
        self._dispatch()

    def _readable(self) -> None:
        for _ in range(BATCH):
            try:
                data, addr = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. ICMP port unreachable reported on the socket
                self._drop("socket_error")
                continue
            self.datagram_received(data, addr)
        self._dispatch()

    def _dispatch(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            task = asyncio.ensure_future(self._handle(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def datagram_received(self, data: bytes, addr) -> None:
        raise NotImplementedError

    def _deliver(self, up: Uplink) -> None:
        self._pending.append(up)

    async def _handle(self, batch: list[Uplink]) -> None:
        fast = self.fast_path
        for up in batch:
            try:
                if fast is None or not fast(up):
                    await self._handler(up)
            except Exception:  # one bad frame must never stop the others
                logger.exception("%s: handling a frame failed", self.name)
                self._drop("handler_error")

    async def stop(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._transport = None
