"""The modeled LoRa air against hand-computed values: time on air (Semtech formula),
the EU868 duty cycle, sensitivity, collisions with capture, corruption and the pcap.

Every scenario runs in discrete-event time (sim.vtime): modeled instants are exact,
whatever the host is doing, so the assertions are equalities."""

import asyncio

import dpkt
import pytest

from sealink.lora import FRAME_LIMITS, max_payload, time_on_air_us, wrap
from sealink_gateway import regions
from sim import vtime
from sim.lora import Clock, LoRaAir, Params, Radio, sub_band

# Hand-computed, BW 125 kHz, CR 4/5, 8-symbol preamble, explicit header, CRC on:
#   T_sym = 2^SF / 125 kHz;  DE = 1 when T_sym >= 16 ms (SF11, SF12)
#   n_payload = 8 + ceil((8 PL - 4 SF + 28 + 16) / (4 (SF - 2 DE))) * 5
#   ToA = (8 + 4.25 + n_payload) T_sym
#  SF7,  20 B: T_sym 1.024 ms;  ceil(176/28) = 7  -> 43 sym -> 55.25 x 1.024  =   56.576 ms
#  SF7, 222 B: ceil(1792/28) = 64 -> 328 sym -> 340.25 x 1.024               =  348.416 ms
#  SF9, 115 B: T_sym 4.096 ms;  ceil(928/36) = 26 -> 138 -> 150.25 x 4.096  =  615.424 ms
#  SF12, 51 B: T_sym 32.768 ms; DE 1; ceil(404/40) = 11 -> 63 -> 75.25 x 32.768 = 2465.792 ms
#  SF12, 23 B (a LoRaWAN join request): ceil(180/40) = 5 -> 33 -> 45.25 x 32.768 = 1482.752 ms
HAND = [(7, 20, 56576), (7, 222, 348416), (9, 115, 615424), (12, 51, 2465792),
        (12, 23, 1482752)]


@pytest.mark.parametrize("sf,length,us", HAND)
def test_time_on_air_matches_hand_computation(sf, length, us):
    assert time_on_air_us(length, sf) == us
    assert Params(sf=sf).time_on_air_s(length) == pytest.approx(us / 1e6)


def test_payload_limits_and_sub_bands():
    # A Sealink frame fills a PHYPayload of M + 5 bytes (RP002), less its MHDR.
    assert {sf: max_payload(sf) for sf in range(7, 13)} == {
        12: 63, 11: 63, 10: 63, 9: 127, 8: 234, 7: 234}
    assert {sf: max_payload(sf, "US915") for sf in range(7, 11)} == {
        10: 23, 9: 65, 8: 137, 7: 254}
    # The devices' table (sealink.lora) is the regions' data (sealink_gateway.regions).
    for name in FRAME_LIMITS:
        region = regions.region(name)
        for sf in range(7, 7 + len(FRAME_LIMITS[name])):
            assert max_payload(sf, name) == region.rate_of(sf, 125).max_frame
    assert regions.names() == ["EU868", "US915"]
    assert [sub_band(f) for f in (868_100_000, 868_500_000, 868_800_000, 869_525_000)] == [
        "g1", "g1", "g2", "g3"]

    async def over_limit():
        air = LoRaAir(Clock())
        with pytest.raises(ValueError, match="SF12 limit"):
            await air.transmit(air.attach(Radio("a", (0, 0), Params(sf=12))), bytes(65))

    vtime.run(over_limit())


def _run(coro):
    return vtime.run(coro)


def test_duty_cycle_holds_the_next_frame_in_modeled_time():
    async def scenario():
        clock = Clock()
        air = LoRaAir(clock)
        tx = air.attach(Radio("tx", (0, 0), Params(sf=12)))
        got = []
        air.attach(Radio("rx", (100, 0), Params(sf=12),
                         on_receive=lambda f, *a: got.append((clock.now(), f))))
        await air.transmit(tx, b"a" * 51)
        await air.transmit(tx, b"b" * 51)
        (t1, _), (t2, _) = got
        toa = 2.465792
        # The first frame ends at toa; the band reopens 100 toa after it started.
        assert t1 == pytest.approx(toa, abs=1e-6)
        assert t2 - t1 == pytest.approx(100 * toa, abs=1e-6)
        assert tx.duty_wait_s == pytest.approx(99 * toa, abs=1e-6)
        assert tx.airtime_s == pytest.approx(2 * toa) and tx.frames_sent == 2

    _run(scenario())


def test_sensitivity_depends_on_spreading_factor():
    async def scenario():
        air = LoRaAir(Clock())
        heard = {7: [], 12: []}
        for sf in (7, 12):
            air.attach(Radio(f"rx{sf}", (10000, 0), Params(sf=sf),
                             on_receive=lambda f, r, s, ok, p: heard[p.sf].append(s)))
        far7 = air.attach(Radio("a", (0, 0), Params(sf=7)))
        far12 = air.attach(Radio("b", (0, 1), Params(sf=12)))
        await asyncio.gather(air.transmit(far7, b"x" * 10), air.transmit(far12, b"y" * 10))
        # 10 km, exponent 2.7, 40 dB at 1 m: 14 dBm - 148 dB = -134 dBm; the noise floor
        # at 125 kHz (NF 6 dB) is -117 dBm, so SNR -17 dB: under SF7's -7.5 dB floor,
        # over SF12's -20 dB.
        assert heard[7] == [] and len(heard[12]) == 1
        assert air.lost == {"sensitivity": 1}

    _run(scenario())


def test_collisions_and_the_capture_effect():
    async def scenario():
        air = LoRaAir(Clock())
        got = []
        air.attach(Radio("gw", (0, 0), Params(sf=7),
                         on_receive=lambda f, *a: got.append(f)))
        near = air.attach(Radio("near", (100, 0), Params(sf=7)))
        far = air.attach(Radio("far", (3000, 0), Params(sf=7)))
        twin = air.attach(Radio("twin", (0, 100), Params(sf=7)))
        # Near and far overlap: the near one is > 6 dB stronger and is captured.
        await asyncio.gather(air.transmit(near, b"near"), air.transmit(far, b"far!"))
        assert got == [b"near"] and air.lost == {"collision": 1}
        # (near and far are now held by the duty cycle: fresh radios from here on.)
        # Equal strength: both are lost.
        got.clear()
        west = air.attach(Radio("west", (0, -100), Params(sf=7)))
        await asyncio.gather(air.transmit(west, b"w2"), air.transmit(twin, b"t2"))
        assert got == [] and air.lost == {"collision": 3}
        # Another spreading factor does not collide.
        south = air.attach(Radio("south", (-100, 0), Params(sf=7)))
        other = air.attach(Radio("sf9", (0, 100), Params(sf=9)))
        got.clear()
        air.attach(Radio("gw9", (0, 0), Params(sf=9), on_receive=lambda f, *a: got.append(f)))
        await asyncio.gather(air.transmit(south, b"s3"), air.transmit(other, b"o3"))
        assert sorted(got) == [b"o3", b"s3"] and air.lost == {"collision": 3}

    _run(scenario())


def test_corruption_reaches_the_receiver_flagged_and_every_frame_is_in_the_pcap(tmp_path):
    async def scenario():
        air = LoRaAir(Clock(), corrupt=1.0, seed=3, pcap=tmp_path / "air.pcap")
        got = []
        air.attach(Radio("rx", (100, 0), on_receive=lambda f, r, s, ok, p: got.append((f, ok))))
        tx = air.attach(Radio("tx", (0, 0)))
        await air.transmit(tx, b"hello")
        air.close()
        ((frame, ok),) = got
        assert not ok and frame != b"hello" and len(frame) == 5
        assert sum(bin(a ^ b).count("1") for a, b in zip(frame, b"hello", strict=True)) == 1

    _run(scenario())
    with open(tmp_path / "air.pcap", "rb") as f:
        reader = dpkt.pcap.Reader(f)
        assert reader.datalink() == 270
        ((_, buf),) = list(reader)
    assert buf[:4] == b"\x00\x00\x00\x0f" and buf[4:8] == (868_100_000).to_bytes(4, "big")
    assert buf[8:10] == b"\x01\x07" and buf[14] == 0x12 and len(buf) == 15 + 5


def test_pure_aloha_without_capture_and_capture_with_it():
    """capture_db=None: any overlap loses both frames, whatever their strengths."""
    async def scenario(capture_db):
        air = LoRaAir(Clock(), capture_db=capture_db)
        got = []
        air.attach(Radio("gw", (0, 0), Params(sf=7), on_receive=lambda f, *a: got.append(f)))
        near = air.attach(Radio("near", (100, 0), Params(sf=7)))
        far = air.attach(Radio("far", (3000, 0), Params(sf=7)))

        async def late():
            await asyncio.sleep(0.01)  # starts while "near" is still on the air
            await air.transmit(far, b"far!")

        await asyncio.gather(air.transmit(near, b"near"), late())
        return got, dict(air.lost)

    assert _run(scenario(None)) == ([], {"collision": 2})
    assert _run(scenario(6.0)) == ([b"near"], {"collision": 1})


def test_critical_section_spares_a_frame_whose_preamble_start_was_hit():
    """LoRaSim's timing rule: an interferer that ends within the first n_preamble - 5
    symbols of a frame does not destroy it; one that ends later does."""
    sym = 2 ** 7 / 125_000  # SF7 symbol time
    toa = Params(sf=7).time_on_air_s(10)

    async def scenario(offset):
        air = LoRaAir(Clock(), capture_db=None, critical_section=True)
        got = []
        air.attach(Radio("gw", (0, 0), Params(sf=7), on_receive=lambda f, *a: got.append(f)))
        a = air.attach(Radio("a", (100, 0), Params(sf=7)))
        b = air.attach(Radio("b", (0, 100), Params(sf=7)))

        async def second():
            await asyncio.sleep(offset)
            await air.transmit(b, b"b" * 10)

        await asyncio.gather(air.transmit(a, b"a" * 10), second())
        return got

    # b starts 1 symbol before a ends: a's first 3 preamble symbols are the only part of
    # b that overlaps (a ends first) -> b survives; a, hit in its payload, is lost.
    assert _run(scenario(toa - 1 * sym)) == [b"b" * 10]
    # b starts 4 symbols before a ends: it overlaps b's critical section -> both lost.
    assert _run(scenario(toa - 4 * sym)) == []


def test_iq_polarity_separates_uplinks_from_downlinks():
    async def scenario():
        air = LoRaAir(Clock())
        heard = {"gw": [], "dev": []}
        gw = air.attach(Radio("gw", (0, 0), Params(sf=7), rx_iq_inverted=False,
                              on_receive=lambda f, *a: heard["gw"].append(f)))
        dev = air.attach(Radio("dev", (100, 0), Params(sf=7), rx_iq_inverted=True,
                               on_receive=lambda f, *a: heard["dev"].append(f)))
        other = air.attach(Radio("other", (0, 100), Params(sf=7)))
        await air.transmit(other, b"up")  # normal IQ: the gateway hears it, not dev
        await air.transmit(gw, b"down", Params(sf=7, iq_inverted=True))
        # Retuned (a new SF): the index of who hears what follows.
        dev.params = Params(sf=9)
        await air.transmit(gw, b"sf9", Params(sf=9, iq_inverted=True))
        await air.transmit(gw, b"sf7", Params(sf=7, iq_inverted=True))
        del dev
        return heard

    assert _run(scenario()) == {"gw": [b"up"], "dev": [b"down", b"sf9"]}


def test_rak3172_model_holds_the_duty_cycle_exactly_in_discrete_time():
    """The device's AT driver (lib/sealink/drivers/rak3172.py) and the module model on
    an in-process UART, on the discrete-event clock: the module takes AT+PSEND at once
    and reports TXP2P DONE when its frame has left; a second frame leaves exactly
    100 x time on air after the first one started (1 % duty cycle)."""
    from sealink.drivers.rak3172 import Rak3172
    from sim.rak3172 import Rak3172Model
    from sim.uart import pipe

    async def scenario():
        air = LoRaAir(Clock())
        heard = []
        air.attach(Radio("gw", (0, 0), Params(sf=12), on_receive=lambda f, *a: heard.append(
            (air.clock.now(), f))))
        device_side, module_side = pipe()
        model = Rak3172Model(air, air.attach(Radio("module", (500, 0))), *module_side)
        model.start()
        radio = Rak3172(*device_side, sf=12)
        await radio.start()
        started = air.clock.now()
        await radio.send(b"a" * 50)  # 51 bytes on the air, with the MHDR
        first_done = air.clock.now()
        await radio.send(b"b" * 50)
        second_done = air.clock.now()
        radio.close()
        model.stop()
        return started, first_done, second_done, heard, model

    started, first_done, second_done, heard, model = _run(scenario())
    toa = 2.465792
    assert [f for _, f in heard] == [wrap(b"a" * 50), wrap(b"b" * 50)]
    assert first_done - started == pytest.approx(toa, abs=1e-3)  # UART time is not modeled
    assert heard[1][0] - heard[0][0] == pytest.approx(100 * toa, abs=1e-6)
    assert second_done - first_done == pytest.approx(100 * toa, abs=1e-3)
    assert model.radio.duty_wait_s == pytest.approx(99 * toa, abs=1e-3)


def test_rak3172_driver_hears_downlinks_with_inverted_iq_only():
    """Downlinks go out with inverted IQ (the packet forwarder's "ipol": true).  The
    module hears normal IQ until told otherwise (a driver that never sets AT+IQINVER
    would not hear its gateway); the driver listens inverted and transmits normal."""
    from sealink.drivers.rak3172 import Rak3172
    from sim.rak3172 import Rak3172Model
    from sim.uart import pipe

    async def scenario():
        air = LoRaAir(Clock())
        gw_heard = []
        gw = air.attach(Radio("gw", (0, 0), Params(sf=9), rx_iq_inverted=False,
                              on_receive=lambda f, *a: gw_heard.append(f)))
        device_side, module_side = pipe()
        model = Rak3172Model(air, air.attach(Radio("module", (500, 0))), *module_side)
        model.start()
        # The module as shipped, in P2P receive, IQ not inverted: deaf to downlinks.
        model._command("AT+NWM=0")
        model._command("AT+P2P=868100000:9:125:0:8:14")
        model._command("AT+PRECV=65533")
        await air.transmit(gw, wrap(b"\x40\x00\x01before"), Params(sf=9, iq_inverted=True))
        unheard = model.stats["heard"]
        radio = Rak3172(*device_side, sf=9)
        await radio.start()
        await air.transmit(gw, wrap(b"\x40\x00\x01after"), Params(sf=9, iq_inverted=True))
        await air.transmit(gw, wrap(b"\x40\x00\x01normal"), Params(sf=9))  # another device
        got = await radio.recv()
        await radio.send(b"\x40\x00\x01up")
        radio.close()
        model.stop()
        return unheard, got, model.stats["heard"], gw_heard

    unheard, got, heard, gw_heard = _run(scenario())
    assert unheard == 0 and got[0] == b"\x40\x00\x01after" and heard == 1
    assert gw_heard == [wrap(b"\x40\x00\x01up")]  # the uplink went out with normal IQ


def test_class_a_device_hears_only_in_its_receive_windows():
    """A class A device (sim.cell.AirRadio) listens RX1 after its uplink on its channel
    and RX2 a second later on 869.525 MHz at SF12: a downlink in either window is
    heard; one that starts outside them, or has the wrong polarity, is not."""
    from sim.cell import AirRadio

    async def case(offset, params):
        # The downlink is timed from the end of the uplink, as a concentrator's tmst.
        clock = Clock()
        air = LoRaAir(clock)
        gw = air.attach(Radio("gw", (0, 0), Params(sf=7), rx_iq_inverted=False))
        dev = AirRadio(air, air.attach(Radio("dev", (300, 0), Params(sf=7))), 1.0)
        up = Params(sf=7).time_on_air_s(len(wrap(b"\x40\x00\x01up")))

        async def downlink():
            await clock.sleep(up + offset)
            await air.transmit(gw, wrap(b"\x40\x00\x01down"), params)

        task = asyncio.ensure_future(downlink())
        await dev.send(b"\x40\x00\x01up")
        await task
        return [f for f, _, _ in dev._heard]

    inverted = {"iq_inverted": True}
    assert _run(case(1.0, Params(sf=7, **inverted))) == [b"\x40\x00\x01down"]  # RX1
    assert _run(case(2.0, Params(freq=869_525_000, sf=12, **inverted))) == [
        b"\x40\x00\x01down"]  # RX2
    assert _run(case(1.5, Params(sf=7, **inverted))) == []  # between the windows
    assert _run(case(2.0, Params(sf=7, **inverted))) == []  # RX2's time, RX1's channel
    assert _run(case(1.0, Params(sf=7))) == []  # RX1, normal IQ: another device's uplink


def _silenced_during_send(tx_timeout_ms=None):
    """A send whose module stops answering (browned out, its UART gone) once it has
    taken AT+PSEND: the driver's send task, the driver and the module model."""
    from sealink.drivers.rak3172 import Rak3172
    from sim.rak3172 import Rak3172Model
    from sim.uart import pipe

    async def start():
        air = LoRaAir(Clock())
        device_side, module_side = pipe()
        model = Rak3172Model(air, air.attach(Radio("module", (500, 0))), *module_side)
        model.start()
        radio = Rak3172(*device_side, sf=12, tx_timeout_ms=tx_timeout_ms)
        await radio.start()
        send = asyncio.ensure_future(radio.send(b"a" * 50))
        for _ in range(1000):  # until the module has taken the frame (bounded)
            if any(c.startswith("AT+PSEND") and s == "OK" for c, s in model.history):
                break
            await asyncio.sleep(0.01)
        model.silent = True
        for t in model._tx_tasks:  # nor will it report the frame sent
            t.cancel()
        return send, radio, model

    return start


def test_a_cancelled_send_ends_cancelled_when_the_module_stops_answering():
    """Cancelling a send (a timeout around it, the device stopping) ends it as
    cancelled.  The driver still tries to put the module back to listening; when the
    module does not answer, that failure is counted, and it must not replace the
    cancellation (a task that is cancelled and ends with ModemError breaks every
    shutdown that waits for it)."""

    async def scenario():
        send, radio, model = await _silenced_during_send()()
        send.cancel()
        outcome = None
        try:
            await asyncio.wait_for(send, 60)
        except asyncio.CancelledError:
            outcome = "cancelled"
        except Exception as e:  # noqa: BLE001 (the outcome under test)
            outcome = repr(e)
        radio.close()
        model.stop()
        return outcome, send.cancelled(), dict(radio.stats)

    outcome, cancelled, stats = _run(scenario())
    assert outcome == "cancelled" and cancelled
    assert stats["restore_failed"] == 1 and stats["tx"] == 0


def test_a_failed_send_reports_its_own_error_not_the_restores():
    """A frame the module never reports sent fails with that error (AT+PSEND: no
    TXP2P DONE), even when putting the module back to listening fails as well."""
    from sealink.drivers.rak3172 import ModemError

    async def scenario():
        send, radio, model = await _silenced_during_send(tx_timeout_ms=5000)()
        try:
            await asyncio.wait_for(send, 120)
            error = None
        except ModemError as e:
            error = e
        radio.close()
        model.stop()
        return error, dict(radio.stats)

    error, stats = _run(scenario())
    assert error is not None and (error.command, error.status) == ("AT+PSEND", "no TXP2P DONE")
    assert stats["restore_failed"] == 1
