# A fake of MicroPython's `bluetooth` module (no BLE host stack can be built here): the
# calls the Sealink BLE driver makes, recorded, plus methods a test uses to play the
# central (connect, exchange MTU, write, disconnect), which raise the driver's IRQs the
# way the real stack does.

FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010


class UUID:
    def __init__(self, value):
        self._s = value.lower()
        self._b = bytes(reversed(bytes.fromhex(self._s.replace("-", ""))))

    def __bytes__(self):
        return self._b

    def __eq__(self, other):
        return isinstance(other, UUID) and other._s == self._s

    def __repr__(self):
        return "UUID('" + self._s + "')"


class BLE:
    def __init__(self):
        self._active = False
        self._config = {}
        self._irq = None
        self._values = {}
        self._buffers = {}
        self.services = None
        self.adverts = []
        self.notified = []  # (conn, handle, data)

    def active(self, on=None):
        if on is not None:
            self._active = bool(on)
        return self._active

    def config(self, **kw):
        self._config.update(kw)

    def irq(self, handler):
        self._irq = handler

    def gatts_register_services(self, services):
        self.services = services
        handles = []
        h = 10
        for _uuid, chars in services:
            row = []
            for _c in chars:
                h += 2
                row.append(h)
                self._values[h] = b""
            handles.append(tuple(row))
        return tuple(handles)

    def gatts_set_buffer(self, handle, size, append=False):
        self._buffers[handle] = size

    def gap_advertise(self, interval_us, adv_data=None):
        if not self._active:
            raise OSError(-1)
        self.adverts.append((interval_us, bytes(adv_data or b"")))

    def gatts_read(self, handle):
        return self._values[handle]

    def gatts_notify(self, conn, handle, data=None):
        if conn != self._conn:
            raise OSError(-128)  # ENOTCONN
        self.notified.append((conn, handle, bytes(data)))

    # --- the central's side, for tests --------------------------------------------------

    _conn = None

    def central_connect(self, conn=64):
        self._conn = conn
        self._irq(1, (conn, 0, b"\xf0\xf1\xf2\xf3\xf4\xf5"))

    def central_mtu(self, mtu):
        self._irq(21, (self._conn, mtu))

    def central_write(self, handle, data):
        size = self._buffers.get(handle, 20)
        self._values[handle] = bytes(data)[:size]  # the stack truncates to the buffer
        self._irq(3, (self._conn, handle))

    def central_disconnect(self):
        conn, self._conn = self._conn, None
        self._irq(2, (conn, 0, b"\xf0\xf1\xf2\xf3\xf4\xf5"))
