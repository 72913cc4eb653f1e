# UDP driver: a device on IP (the unix port, an ESP32 on Wi-Fi) talking to the gateway's
# udp:// transport, one Sealink frame per datagram.

import asyncio
import socket
import sys

from sealink.drivers.rak3172 import ModemError


class Udp:
    def __init__(self, host, port, mtu=222):
        self.mtu = mtu
        self.addr = socket.getaddrinfo(host, port)[0][-1]
        self._sock = None
        self._reader = None
        self.stats = {"rx": 0, "tx": 0, "oversized": 0, "errors": 0}

    async def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(self.addr)  # the gateway only: datagrams from elsewhere are not ours
        s.setblocking(False)
        self._sock = s
        if sys.implementation.name == "micropython":
            self._reader = asyncio.StreamReader(s)

    async def send(self, frame):
        if len(frame) > self.mtu:
            raise ModemError("sendto", "frame of %d bytes (limit %d)" % (len(frame), self.mtu))
        try:
            self._sock.send(frame)
        except OSError as e:  # no route, buffer full: lost like a frame on the air
            raise ModemError("sendto", str(e)) from None
        self.stats["tx"] += 1

    async def recv(self):
        while True:
            try:
                if self._reader is not None:
                    data = await self._reader.read(2048)
                else:
                    data = await asyncio.get_running_loop().sock_recv(self._sock, 2048)
            except OSError:
                # ICMP port unreachable (the gateway is down) is reported on the next
                # receive of a connected socket: count it and keep listening.
                self.stats["errors"] += 1
                await asyncio.sleep(0.1)
                continue
            if len(data) > self.mtu:
                self.stats["oversized"] += 1
                continue
            if data:
                self.stats["rx"] += 1
                return (data, 0, 0)

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None
