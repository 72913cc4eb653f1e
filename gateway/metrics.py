"""Prometheus metrics for the gateway, served over HTTP by prometheus-client."""

from __future__ import annotations

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from sealink_gateway.service import Gateway


class GatewayCollector:
    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    def collect(self):
        gw = self.gateway
        handshakes = CounterMetricFamily("sealink_handshakes", "Handshakes by outcome",
                                         labels=["outcome"])
        handshakes.add_metric(["started"], gw.counters["handshakes_started"])
        handshakes.add_metric(["completed"], gw.counters["handshakes_completed"])
        yield handshakes
        yield CounterMetricFamily("sealink_enrollments", "Devices enrolled",
                                  value=gw.counters["enrolled"])
        messages = CounterMetricFamily("sealink_messages", "Messages by direction",
                                       labels=["direction"])
        messages.add_metric(["up"], gw.counters["uplinks"])
        messages.add_metric(["up_published"], gw.counters["published"])
        messages.add_metric(["down_acked"], gw.counters["downlinks_acked"])
        messages.add_metric(["down_failed"], gw.counters["downlinks_failed"])
        yield messages
        drops = CounterMetricFamily("sealink_drops", "Frames and messages dropped, by reason",
                                    labels=["reason"])
        for reason, n in sorted(gw.drops.items()):
            drops.add_metric([reason], n)
        yield drops
        medium = CounterMetricFamily("sealink_transport_drops",
                                     "Input a transport's medium refused, by reason",
                                     labels=["transport", "reason"])
        for t in gw.transports:
            for reason, n in sorted(t.drops.items()):
                medium.add_metric([t.name, reason], n)
        yield medium
        # LoRa class A (semtech-udp): the forwarder's TX_ACK errors, the scheduler's
        # windows and deferrals, the concentrators' duty cycle, other networks' frames.
        tx_errors = CounterMetricFamily("sealink_downlink_tx_errors",
                                        "Downlinks the packet forwarder did not send (TX_ACK)",
                                        labels=["transport", "error"])
        windows = CounterMetricFamily("sealink_downlink_windows",
                                      "Downlink frames scheduled, by receive window",
                                      labels=["transport", "window"])
        deferred = CounterMetricFamily("sealink_downlinks_deferred",
                                       "Downlink frames that waited for the next uplink",
                                       labels=["transport", "reason"])
        ignored = CounterMetricFamily("sealink_frames_ignored",
                                      "Frames heard that are not Sealink's (LoRaWAN, ...)",
                                      labels=["transport", "kind"])
        duty = GaugeMetricFamily("sealink_duty_cycle_used",
                                 "Busiest hour's time on air / the sub-band's hourly budget",
                                 labels=["transport", "gateway", "band"])
        for t in gw.transports:
            for error, n in sorted(getattr(t, "tx_errors", {}).items()):
                tx_errors.add_metric([t.name, error], n)
            for window, n in sorted(getattr(t, "scheduled", {}).items()):
                windows.add_metric([t.name, window], n)
            for reason, n in sorted(getattr(t, "deferred", {}).items()):
                deferred.add_metric([t.name, reason], n)
            for kind, n in sorted(getattr(t, "ignored", {}).items()):
                ignored.add_metric([t.name, kind], n)
            usage = getattr(t, "duty_cycle_usage", None)
            for eui, bands in (usage() if usage else {}).items():
                for band, used in sorted(bands.items()):
                    duty.add_metric([t.name, eui, band], used)
        yield tx_errors
        yield windows
        yield deferred
        yield ignored
        yield duty
        yield GaugeMetricFamily("sealink_sessions_active", "Established device sessions",
                                value=sum(1 for s in gw.sessions.values() if s.authorized))
        yield GaugeMetricFamily("sealink_downlink_queue_depth", "Downlinks not yet sent",
                                value=len(gw.store.downlinks(states=("queued",))))


def serve(gateway: Gateway, host: str, port: int):
    """Start the metrics HTTP server; returns (server, thread)."""
    registry = CollectorRegistry()
    registry.register(GatewayCollector(gateway))
    return start_http_server(port, addr=host, registry=registry)
