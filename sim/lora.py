"""The modeled LoRa air: time on air, EU868 payload limits and duty cycle, path loss,
collisions with the capture effect, configurable loss and corruption, and a pcap of
every frame (LoRaTap, link type 270) that Wireshark opens.

Time: every figure is read off `Clock`, which reads the running event loop's clock.
In a discrete-event loop (`sim.vtime`, used by the model tests and the in-process
cell) that clock advances only when every task waits, so results are exact and do not
depend on the host.  With firmware processes in the loop (`sim.fleet`), the loop runs
in wall time and `scale` modeled seconds pass per wall second: see docs/simulation.md.

The reception and collision model follows LoRaSim (Bor et al., "Do LoRa Low-Power
Wide-Area Networks Scale?", MSWiM 2016):
- a frame is heard when its SNR at the receiver (log-distance path loss, thermal noise
  floor of the bandwidth plus a 6 dB noise figure) is over the demodulation limit of
  its spreading factor (SX126x datasheet values, SNR_FLOOR);
- two frames interfere only on the same frequency, bandwidth and spreading factor
  (different SFs are taken as orthogonal, as in LoRaSim);
- of two overlapping frames, one that is `capture_db` (6 dB) stronger survives and the
  weaker is lost; closer than that, both are lost (`capture_db=None`: any overlap loses
  both, pure ALOHA);
- with `critical_section`, an interferer that ends within the first n_preamble - 5
  symbols of a frame does not hurt it (the receiver locks on the last 5 preamble
  symbols).
Where it differs from LoRaSim: the concentrator's 8 demodulation paths are not a
limit, and frequencies are discrete channels (no partial overlap between channels).
"""

from __future__ import annotations

import asyncio
import math
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dpkt

from sealink.lora import max_payload, time_on_air_us

LINKTYPE_LORATAP = 270
SYNC_WORD_PRIVATE = 0x12
# SX126x demodulation floor (SNR, dB) per spreading factor, and a 6 dB capture margin:
# a frame survives an overlapping one on the same channel and SF if it is that much
# stronger at the receiver.
SNR_FLOOR = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}
CAPTURE_DB = 6.0
NOISE_FIGURE_DB = 6.0
DUTY_CYCLE = 0.01  # EU868 g, g1, g2 sub-bands used here: 1 %


def sub_band(freq_hz: int) -> str:
    """EU868 sub-band (ETSI EN 300 220) of a frequency."""
    if 868_000_000 <= freq_hz < 868_600_000:
        return "g1"
    if 868_700_000 <= freq_hz < 869_200_000:
        return "g2"
    if 869_400_000 <= freq_hz < 869_650_000:
        return "g3"  # 10 %
    return "g"


class Clock:
    """Modeled time: `scale` modeled seconds per second of the event loop's clock, from
    the first reading (in a discrete-event loop, scale 1: the loop's time is modeled)."""

    def __init__(self, scale: float = 1.0):
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.scale = scale
        self._wall0: float | None = None

    def now(self) -> float:
        loop = asyncio.get_running_loop()
        if self._wall0 is None:
            self._wall0 = loop.time()
        return (loop.time() - self._wall0) * self.scale

    async def sleep(self, modeled_s: float) -> None:
        if modeled_s > 0:
            await asyncio.sleep(modeled_s / self.scale)

    def wall(self, modeled_s: float) -> float:
        return modeled_s / self.scale


@dataclass
class Params:
    freq: int = 868_100_000
    sf: int = 7
    bw: int = 125  # kHz
    cr: int = 1  # 1..4 for 4/5..4/8
    preamble: int = 8
    power: int = 14  # dBm
    iq_inverted: bool = False  # downlinks are sent with inverted IQ (LoRaWAN convention)

    def channel(self) -> tuple[int, int, int]:
        return (self.freq, self.sf, self.bw)

    def time_on_air_s(self, length: int) -> float:
        return time_on_air_us(length, self.sf, self.bw * 1000, self.cr, self.preamble) / 1e6


@dataclass(eq=False)
class Radio:
    """One transceiver on the air: a device's module or a concentrator."""

    name: str
    position: tuple[float, float]
    params: Params = field(default_factory=Params)
    on_receive: Callable[[bytes, float, float, bool, Params], None] | None = None
    any_sf: bool = False  # a concentrator demodulates every SF at once...
    channels: tuple[int, ...] = ()  # ...on each of these frequencies (empty: its own)
    listening: bool = True
    # IQ polarity it receives: False (uplinks, as a concentrator), True (downlinks, as a
    # class A device), None: either (the RAK3172 model, until its driver sets one).
    rx_iq_inverted: bool | None = None
    regulated: bool = True  # held to the duty cycle (False: theory checks only)
    # What the model measured for this radio (modeled seconds).
    frames_sent: int = 0
    bytes_sent: int = 0
    airtime_s: float = 0.0
    duty_wait_s: float = 0.0
    band_free_at: dict[str, float] = field(default_factory=dict)
    band_log: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    airtime_log: list[tuple[float, float]] = field(default_factory=list)  # (start, toa)
    _tx_until: float = 0.0
    _air: LoRaAir | None = None

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in ("params", "channels", "any_sf", "rx_iq_inverted"):
            air = self.__dict__.get("_air")
            if air is not None:
                air._index = None  # who hears what has changed


@dataclass
class _OnAir:
    sender: Radio
    params: Params
    start: float
    end: float


class LoRaAir:
    def __init__(self, clock: Clock, loss: float = 0.0, corrupt: float = 0.0,
                 path_loss_exponent: float = 2.7, reference_loss_db: float = 40.0,
                 seed: int | None = None, pcap: str | Path | None = None,
                 reference_m: float = 1.0, capture_db: float | None = CAPTURE_DB,
                 critical_section: bool = False):
        self.clock = clock
        self.loss, self.corrupt = loss, corrupt
        self.exponent, self.ref_loss, self.ref_m = (path_loss_exponent, reference_loss_db,
                                                    reference_m)
        self.capture_db = capture_db
        self.critical_section = critical_section
        self._index: dict | None = None  # (freq, sf, iq) -> radios that hear it
        # on_outcome(sender, receiver, params, "ok" or why lost): every reception decided
        self.on_outcome: Callable[[Radio, Radio, Params, str], None] | None = None
        self.rng = random.Random(seed)
        self.radios: list[Radio] = []
        self._on_air: list[_OnAir] = []
        self.frames = 0
        self.lost: dict[str, int] = {}
        self._pcap_file = None
        self._pcap = None
        self.epoch = time.time()  # pcap timestamps: wall time at start + modeled time
        self.pcap_frames = 0
        if pcap is not None:
            Path(pcap).parent.mkdir(parents=True, exist_ok=True)
            self._pcap_file = open(pcap, "wb")  # noqa: SIM115 (closed by close())
            self._pcap = dpkt.pcap.Writer(self._pcap_file, linktype=LINKTYPE_LORATAP)

    def attach(self, radio: Radio) -> Radio:
        self.radios.append(radio)
        radio._air = self
        self._index = None
        return radio

    def detach(self, radio: Radio) -> None:
        self.radios.remove(radio)
        radio._air = None
        self._index = None

    def _listeners(self, p: Params) -> list[Radio]:
        """The radios tuned to hear a frame sent with `p`, in attach order."""
        if self._index is None:
            index: dict = {}
            for r in self.radios:
                freqs = r.channels or (r.params.freq,)
                sfs = range(7, 13) if r.any_sf else (r.params.sf,)
                iqs = (False, True) if r.rx_iq_inverted is None else (r.rx_iq_inverted,)
                for key in ((f, s, iq, r.params.bw) for f in freqs for s in sfs for iq in iqs):
                    index.setdefault(key, []).append(r)
            self._index = index
        return self._index.get((p.freq, p.sf, p.iq_inverted, p.bw), [])

    def close(self) -> None:
        if self._pcap_file is not None:
            self._pcap_file.close()
            self._pcap_file = self._pcap = None

    # --- propagation ----------------------------------------------------------------------

    def path_loss_db(self, d: float) -> float:
        """Log-distance path loss: reference_loss_db at reference_m, then exponent."""
        return self.ref_loss + 10 * self.exponent * math.log10(max(d, self.ref_m) / self.ref_m)

    def rssi(self, a: Radio, b: Radio, power: int) -> float:
        return power - self.path_loss_db(math.dist(a.position, b.position))

    @staticmethod
    def noise_floor(bw_khz: int) -> float:
        return -174 + 10 * math.log10(bw_khz * 1000) + NOISE_FIGURE_DB

    def _count(self, radio: Radio, reason: str, entry: _OnAir | None = None) -> None:
        radio.lost[reason] = radio.lost.get(reason, 0) + 1
        self.lost[reason] = self.lost.get(reason, 0) + 1
        if self.on_outcome is not None and entry is not None:
            self.on_outcome(entry.sender, radio, entry.params, reason)

    # --- transmission ---------------------------------------------------------------------

    async def wait_duty_cycle(self, radio: Radio, params: Params, toa: float = 0.0) -> float:
        """Hold until the sub-band's 1 % budget allows the next frame: after a frame of
        T seconds the band is off for 99 T (the Ton/Toff rule of LoRaWAN stacks), and the
        time on air of any hour, this frame's included, stays within the budget (the
        rule alone allows up to 100 T / 3600 s more in an hour that starts and ends on
        a frame); returns the modeled wait."""
        band = sub_band(params.freq)
        if not radio.regulated:
            return 0.0
        now = self.clock.now()
        t = max(now, radio.band_free_at.get(band, 0.0))
        budget = (0.1 if band == "g3" else DUTY_CYCLE) * 3600
        log = [(s, d) for s, d in radio.band_log.get(band, ()) if s + 3600 > now]
        radio.band_log[band] = log
        while log:
            window = [(s, d) for s, d in log if s + 3600 > t]
            if not window or sum(d for _, d in window) + toa <= budget:
                break
            t = window[0][0] + 3600  # when the oldest frame of that hour leaves it
        wait = t - now
        if wait > 0:
            radio.duty_wait_s += wait
            await self.clock.sleep(wait)
            return wait
        return 0.0

    async def transmit(self, radio: Radio, frame: bytes, params: Params | None = None,
                       at: float | None = None) -> float:
        """Put one frame on the air (after the duty-cycle wait); returns when it has been
        sent.  Receivers get it at its end, unless lost.  Returns the time on air.
        `at`: the modeled start a transmitter scheduled by its own timer (a
        concentrator's tmst), kept exact however late the event loop wakes."""
        params = params or radio.params
        if not 0 < len(frame) <= max_payload(params.sf) + 1:  # (+ the MHDR)
            raise ValueError(f"{len(frame)} bytes over the SF{params.sf} limit")
        toa = params.time_on_air_s(len(frame))
        await self.wait_duty_cycle(radio, params, toa)
        start = self.clock.now() if at is None else at
        band = sub_band(params.freq)
        duty = 0.1 if band == "g3" else DUTY_CYCLE
        radio.band_free_at[band] = start + toa / duty
        radio.band_log.setdefault(band, []).append((start, toa))
        radio.frames_sent += 1
        radio.bytes_sent += len(frame)
        radio.airtime_s += toa
        radio.airtime_log.append((start, toa))
        radio._tx_until = start + toa
        entry = _OnAir(radio, params, start, start + toa)
        self._on_air.append(entry)
        self.frames += 1
        await self.clock.sleep(start + toa - self.clock.now())
        self._deliver(entry, frame)
        return toa

    async def receive_window(self, radio: Radio, margin_s: float = 0.0) -> None:
        """One class A receive window of `radio` on its current channel: open for a
        preamble's 8 symbols (and `margin_s` either side, for a timer that is not exact:
        the caller opens it margin_s early); a frame whose preamble began in it keeps
        the receiver on until the frame ends.  Outside its windows a class A radio hears
        nothing."""
        p = radio.params
        opened = self.clock.now()
        radio.listening = True
        try:
            await self.clock.sleep(2 * margin_s + 8 * (1 << p.sf) / (p.bw * 1000))
            end = self.arriving(radio, since=opened)
            if end is not None:
                await self.clock.sleep(end - self.clock.now() + 1e-6)
        finally:
            radio.listening = False

    def arriving(self, radio: Radio, since: float) -> float | None:
        """The end of a frame on the air that `radio` is tuned to hear and whose preamble
        began at or after `since` (a receiver that opened a window then locks on it)."""
        now = self.clock.now()
        tuned = (radio.params.freq, radio.params.sf, radio.params.bw)
        ends = [o.end for o in self._on_air
                if o.sender is not radio and o.start >= since - 1e-9 and o.end > now
                and o.params.channel() == tuned
                and radio.rx_iq_inverted in (None, o.params.iq_inverted)]
        return max(ends, default=None)

    def _deliver(self, entry: _OnAir, frame: bytes) -> None:
        p = entry.params
        now = self.clock.now()
        # Forget transmissions that can no longer overlap anything on the air.
        self._on_air = [o for o in self._on_air if o.end > now - 60 or o is entry]
        # Frames that overlap this one on its channel (the same for every receiver).
        lock_s = (max(0, p.preamble - 5) * (2 ** p.sf) / (p.bw * 1000)
                  if self.critical_section else 0.0)
        rivals = [o for o in self._on_air if o is not entry
                  and o.params.channel() == p.channel()
                  and o.end > entry.start + lock_s and o.start < entry.end]
        corrupted = self.rng.random() < self.corrupt
        body = frame
        if corrupted:
            i = self.rng.randrange(len(frame))
            body = frame[:i] + bytes((frame[i] ^ (1 << self.rng.randrange(8)),)) + frame[i + 1:]
        self._write_pcap(entry, body)
        for rx in self._listeners(p):
            if rx is entry.sender or rx.on_receive is None or not rx.listening:
                continue
            if rx._tx_until > entry.start:  # half duplex: it was sending
                self._count(rx, "half_duplex", entry)
                continue
            rssi = self.rssi(entry.sender, rx, p.power)
            snr = rssi - self.noise_floor(p.bw)
            if snr < SNR_FLOOR[p.sf]:
                self._count(rx, "sensitivity", entry)
                continue
            if any(self._collides(o, rx, rssi) for o in rivals):
                self._count(rx, "collision", entry)
                continue
            if self.rng.random() < self.loss:
                self._count(rx, "loss", entry)
                continue
            if self.on_outcome is not None:
                self.on_outcome(entry.sender, rx, p, "ok" if not corrupted else "corrupted")
            rx.on_receive(body, round(rssi, 1), round(snr, 1), not corrupted, p)

    def _collides(self, other: _OnAir, rx: Radio, rssi: float) -> bool:
        """Does `other` (on the same channel, overlapping) destroy a frame heard at
        `rssi` by `rx`?"""
        if other.sender is rx:
            return False
        if self.capture_db is None:
            return True
        return rssi - self.rssi(other.sender, rx, other.params.power) < self.capture_db

    def _write_pcap(self, entry: _OnAir, frame: bytes) -> None:
        """Every frame on the air, once, with the signal at the nearest other radio."""
        if self._pcap is None:
            return
        p = entry.params
        others = [r for r in self.radios if r is not entry.sender]
        rssi = max((self.rssi(entry.sender, r, p.power) for r in others), default=p.power)
        snr = rssi - self.noise_floor(p.bw)

        def level(dbm):
            return max(0, min(255, int(round(dbm + 139))))

        # LoRaTap v0: version, padding, length (15, big endian), frequency (Hz), bandwidth
        # (125 kHz steps), SF, packet/max/current RSSI (dBm + 139), SNR (dB x 4, signed),
        # sync word.
        header = struct.pack(">BBHIBBBBBbB", 0, 0, 15, p.freq, p.bw // 125, p.sf, level(rssi),
                             level(rssi), level(rssi), max(-128, min(127, int(snr * 4))),
                             SYNC_WORD_PRIVATE)
        self._pcap.writepkt(header + frame, ts=self.epoch + entry.end)
        self.pcap_frames += 1
