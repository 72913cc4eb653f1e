"""LoRa regions as data (`regions/<NAME>.toml`): data rates and their payload limits,
uplink channels, the RX1 and RX2 receive windows' frequencies and data rates, the
sub-bands' duty cycles and the dwell time.  The gateway's downlink scheduler and the
simulator read them from here; devices carry only their own payload limits
(`sealink.lora.FRAME_LIMITS`, checked against these by the tests)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

HOUR_S = 3600.0


class RegionError(ValueError):
    """An unknown region, or a frequency or data rate it does not have."""


@dataclass(frozen=True)
class DataRate:
    dr: int
    sf: int
    bw: int  # kHz
    m: int  # largest MACPayload

    @property
    def datr(self) -> str:
        return f"SF{self.sf}BW{self.bw}"

    @property
    def max_phy(self) -> int:
        """The largest PHYPayload: MHDR + MACPayload + MIC."""
        return self.m + 5

    @property
    def max_frame(self) -> int:
        """The largest Sealink frame in a proprietary PHYPayload (after the MHDR)."""
        return self.m + 4

    @property
    def max_application(self) -> int:
        """The largest FRMPayload of a LoRaWAN data frame without FOpts (N = M - 8): what
        an application (Sealink over LoRaWAN) may put in one."""
        return self.m - 8


@dataclass(frozen=True)
class SubBand:
    name: str
    low: int
    high: int
    duty: float

    @property
    def budget_s(self) -> float:
        """Time on air allowed in any hour."""
        return self.duty * HOUR_S


@dataclass(frozen=True)
class Region:
    name: str
    data_rates: tuple[DataRate, ...]
    sub_bands: tuple[SubBand, ...]
    rx2_freq: int
    rx2_dr: int
    dwell_time_ms: int  # uplinks (what the payload limits keep to)
    downlink_dwell_time_ms: int  # the gateway's transmissions (0: no limit)
    raw: dict

    def rate(self, dr: int) -> DataRate:
        for r in self.data_rates:
            if r.dr == dr:
                return r
        raise RegionError(f"{self.name} has no DR{dr}")

    def rate_of(self, sf: int, bw: int) -> DataRate:
        for r in self.data_rates:
            if r.sf == sf and r.bw == bw:
                return r
        raise RegionError(f"{self.name} has no data rate SF{sf}BW{bw}")

    def datr_rate(self, datr: str) -> DataRate:
        """The data rate of a packet forwarder's "SF9BW125"."""
        try:
            sf, bw = datr[2:].split("BW")
            return self.rate_of(int(sf), int(bw))
        except ValueError:
            raise RegionError(f"{datr!r} is not a LoRa data rate") from None

    def sub_band(self, freq: int) -> SubBand:
        for b in self.sub_bands:
            if b.low <= freq < b.high:
                return b
        raise RegionError(f"{freq} Hz is outside {self.name}'s bands")

    def uplink_channels(self) -> list[int]:
        ch = self.raw["uplink_channels"]
        if isinstance(ch, list):
            return list(ch)
        return ([ch["first"] + i * ch["step"] for i in range(ch["count"])]
                + [ch["first_500"] + i * ch["step_500"] for i in range(ch["count_500"])])

    def rx1(self, freq: int, rate: DataRate) -> tuple[int, DataRate]:
        """The RX1 frequency and data rate answering an uplink (RX1DROffset 0)."""
        if self.raw["rx1"] == "same":
            return freq, rate
        channels = self.uplink_channels()
        try:
            index = channels.index(int(freq))
        except ValueError:
            raise RegionError(f"{freq} Hz is not a {self.name} uplink channel") from None
        down = self.raw["rx1_first"] + (index % 8) * self.raw["rx1_step"]
        return down, self.rate(self.raw["rx1_dr"][str(rate.dr)])

    def rx2(self, dr: int | None = None) -> tuple[int, DataRate]:
        return self.rx2_freq, self.rate(self.rx2_dr if dr is None else dr)


@cache
def region(name: str) -> Region:
    try:
        text = resources.files("sealink_gateway").joinpath(f"regions/{name}.toml").read_text()
    except (FileNotFoundError, OSError):
        raise RegionError(f"no region {name!r} (have: {', '.join(names())})") from None
    raw = tomllib.loads(text)
    return Region(raw["name"], tuple(DataRate(**d) for d in raw["data_rate"]),
                  tuple(SubBand(**b) for b in raw["sub_band"]), raw["rx2_freq"],
                  raw["rx2_dr"], raw["dwell_time_ms"], raw["downlink_dwell_time_ms"], raw)


def names() -> list[str]:
    return sorted(p.name.removesuffix(".toml")
                  for p in resources.files("sealink_gateway").joinpath("regions").iterdir()
                  if p.name.endswith(".toml"))


class DutyCycle:
    """A transmitter's time on air per sub-band over a sliding hour: `allows()` says
    whether a frame may start at a time without exceeding the sub-band's budget in any
    hour that contains it; `record()` books it."""

    def __init__(self, region: Region):
        self.region = region
        self._log: dict[str, list[tuple[float, float]]] = {}  # band -> [(start, toa)]
        self.refused: dict[str, int] = {}

    def used_s(self, band: SubBand, at: float) -> float:
        """Time on air in the hour before `at` (and anything booked after it)."""
        log = self._log.get(band.name, [])
        return sum(toa for start, toa in log if start > at - HOUR_S)

    def allows(self, freq: int, at: float, toa_s: float) -> bool:
        band = self.region.sub_band(freq)
        if band.duty >= 1.0:
            return True
        # Any hour containing the new frame: the frames booked from an hour before its
        # end onwards (booked ones may lie after it: scheduled downlinks).
        log = self._log.get(band.name, [])
        window = sum(t for s, t in log if s + t > at + toa_s - HOUR_S and s < at + HOUR_S)
        return window + toa_s <= band.budget_s

    def record(self, freq: int, at: float, toa_s: float) -> None:
        band = self.region.sub_band(freq)
        log = self._log.setdefault(band.name, [])
        log.append((at, toa_s))
        # Forget what no future hour can contain.
        while log and log[0][0] + log[0][1] < at - 2 * HOUR_S:
            log.pop(0)

    def usage(self) -> dict[str, float]:
        """Per sub-band: the most time on air in any hour so far, as a fraction of the
        budget."""
        out = {}
        for name, log in self._log.items():
            band = next(b for b in self.region.sub_bands if b.name == name)
            out[name] = busiest_hour_s(log) / band.budget_s if band.duty < 1 else 0.0
        return out


def busiest_hour_s(log: list[tuple[float, float]], window_s: float = HOUR_S) -> float:
    """The most time on air in any `window_s` (sliding, from each frame's start)."""
    best, total, j = 0.0, 0.0, 0
    log = sorted(log)
    for start, toa in log:
        total += toa
        while log[j][0] <= start - window_s:
            total -= log[j][1]
            j += 1
        best = max(best, total)
    return best
