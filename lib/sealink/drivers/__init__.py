# Radio drivers: how a device (or the gateway host) puts Sealink frames on a medium.
# Each driver offers `mtu`, `await start()`, `await send(frame)` and
# `await recv() -> (frame, rssi, snr)`; sealink.device.Device runs on any of them.
