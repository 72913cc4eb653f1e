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
        yield GaugeMetricFamily("sealink_sessions_active", "Established device sessions",
                                value=sum(1 for s in gw.sessions.values() if s.authorized))
        yield GaugeMetricFamily("sealink_downlink_queue_depth", "Downlinks not yet sent",
                                value=len(gw.store.downlinks(states=("queued",))))


def serve(gateway: Gateway, host: str, port: int):
    """Start the metrics HTTP server; returns (server, thread)."""
    registry = CollectorRegistry()
    registry.register(GatewayCollector(gateway))
    return start_http_server(port, addr=host, registry=registry)
