# The reference telemetry application, frozen into the firmware: a sensor node with a
# RAK3172 LoRa module on its UART (in P2P mode; or, given `lorawan`, in LoRaWAN mode on
# a LoRaWAN network, Sealink frames as application payloads).  It enrolls (or
# reconnects), reports how its handshake went, sends telemetry, waits for a command
# from the gateway, acknowledges it, and waits until every uplink is acknowledged.
#
#     import sealink.app
#     sealink.app.run(token=b"...", sf=7, board="QEMU_MPS2_AN385")
#
# The UART is the console's (sys.stdin / sys.stdout): nothing else may write to it,
# so this program prints nothing.  Its result is what the gateway receives.

import asyncio
import sys

from sealink.device import Device, DeviceError, Keystore, now_ms
from sealink.drivers.rak3172 import ModemError, Rak3172


async def _connect(device, backoff_ms):
    # A device never gives up on its gateway: it tries again, backing off to 16x.  (A
    # REJECT saying "revoked" is unauthenticated: it changes nothing here.)
    i = 0
    while True:
        try:
            await device.connect(60000)
            return True
        except DeviceError:
            await asyncio.sleep((backoff_ms << min(i, 4)) / 1000)
            i += 1


async def main(reader, writer, token=b"", gateway_key=None, sf=7, freq=868100000, board="",
               messages=3, interval_ms=1000, keystore=None, command_timeout_ms=None, retry_ms=3000,
               poll_ms=5000, lorawan=None, rx=None, rx_hold_ms=0):
    if lorawan:
        from sealink.drivers.rak3172_lorawan import Rak3172Lorawan

        radio = Rak3172Lorawan(reader, writer, lorawan, fport=lorawan.get("fport", 200),
                               dr=lorawan.get("dr", 0), region=lorawan.get("region", "EU868"),
                               timeout_ms=2000, retries=5)
    else:
        radio = Rak3172(reader, writer, freq=freq, sf=sf, timeout_ms=2000, retries=5, rx=rx,
                        rx_hold_ms=rx_hold_ms)
    for _ in range(10):
        try:
            await radio.start()
            break
        except ModemError:
            await asyncio.sleep(1)
    else:
        return "modem"
    # A device with a DICE identity uses its measured key and sends its evidence.
    from sealink import attestation

    try:
        ident = attestation.identity()
    except attestation.AttestationError:
        ident = None  # a broken UDS: no evidence; the gateway's policy decides
    device = Device(radio, Keystore(keystore, ident[0] if ident else None),
                    {"token": token, "gateway_key": gateway_key, "retry_ms": retry_ms,
                     "max_retries": 8, "evidence": ident[1] if ident else None})
    result = await session(device, board, messages, interval_ms, command_timeout_ms,
                           retry_ms, poll_ms)
    radio.close()
    return result


async def session(device, board="", messages=3, interval_ms=1000, command_timeout_ms=None,
                  retry_ms=3000, poll_ms=5000):
    """The application proper, on any radio: connect, report, send telemetry, take a
    command, acknowledge it, and wait until every uplink is acknowledged.  It waits as
    long as that takes (command_timeout_ms=None); the caller bounds the run."""
    await _connect(device, retry_ms)
    # The frames of first contact, or of the reconnect: sent, and taken by the session
    # (a shared downlink channel carries other devices' frames too).
    ch = device.channel
    await device.send(b"hello board=%s hs_ms=%d frames=%d down=%d" % (
        board.encode(), device.stats["handshake_ms"], device.stats["frames_out"],
        ch.frames_in - sum(ch.drops.values()) if ch else 0))
    for i in range(messages):
        await asyncio.sleep(interval_ms / 1000)
        await device.send(b"t=%d.%d ms=%d" % (20 + i, i * 3 % 10, now_ms() & 0xFFFFFF))
    # Wait for a command, pinging now and then: the gateway answers in the receive
    # window that follows a transmission.
    commands = device.commands()
    command = None
    waited = 0
    while command is None and (command_timeout_ms is None or waited < command_timeout_ms):
        try:
            command = await asyncio.wait_for(commands.__anext__(), poll_ms / 1000)
        except asyncio.TimeoutError:
            waited += poll_ms
            await device.ping()
    if command is None:
        return "no command"
    await device.send(b"done " + command)
    while not await device.flush(60000):
        pass
    device.close()
    return "ok"


def run(**kw):
    reader = asyncio.StreamReader(sys.stdin.buffer)
    writer = asyncio.StreamWriter(sys.stdout.buffer, {})
    return asyncio.run(main(reader, writer, **kw))
