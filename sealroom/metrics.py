"""``/metrics`` in the Prometheus text format, and the event-loop lag probe behind it.

Numbers come from ``SignalingServer.stats`` and ``Sfu.stats()`` (with worker processes,
``SfuWorkers.stats()`` summed over the workers, plus per-worker families labelled
``worker``) at scrape time through a custom collector (prometheus_client's documented way
to export values another component keeps,
https://prometheus.github.io/client_python/collector/custom/), registered on a registry of
its own per server: nothing global, so several servers in one process (tests) never share
or clash. No label carries a room name or a participant id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sfu.looplag import LoopLag

if TYPE_CHECKING:
    from sfu.workers import WorkerStats
    from signaling.server import SignalingServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "sealroom_"


# SignalingServer.stats key -> (metric name, help). Keys "errors.<id>" become one
# labelled family; anything else unknown is not exported (no accidental cardinality).
SIGNALING_COUNTERS = {
    "connections": ("ws_connections", "WebSocket connections accepted"),
    "messages": ("ws_messages", "client messages received"),
    "joins": ("joins", "participants admitted to a room"),
    "sealed_relayed": ("sealed_relayed", "sealed envelopes relayed"),
    "resumes": ("resumes", "members readmitted with a resume credential (PROTOCOL.md Resuming)"),
    "rate_limited.address": ("rate_limit_address_closes",
                             "sockets closed because their address exceeded its message rate"),
    "rate_limited.upgrade": ("rate_limit_upgrade_refusals",
                             "upgrades refused (429) while the address's message budget is empty"),
    "ws_resets": ("ws_resets", "connections reset: the peer did not take the close frame"),
}

# With --redis only (docs/DEPLOY.md "Several nodes"): SignalingServer.stats key -> metric.
CLUSTER_COUNTERS = {
    "bridged": ("cluster_bridged_joins", "joins this node bridged to the room's node"),
    "relayed_sessions": ("cluster_relayed_sessions",
                         "sockets bridged here from another node (their room is hosted here)"),
    "relay_unknown": ("cluster_relay_unknown",
                      "relay messages for no known socket, or not relay messages"),
}

# Refusals of a join, besides a wrong password (counted on its own by the server).
ADMISSION_REFUSALS = ("too-many-attempts", "room-locked", "room-full", "no-such-room",
                      "too-many-rooms", "weak-kdf", "excessive-kdf", "bad-resume",
                      "resume-expired", "shutting-down", "cluster-unavailable")

# Sfu.gauges() / SfuWorkers.gauges() key -> (metric name, help).
SFU_GAUGES = {
    "rooms": ("sfu_rooms", "rooms with media sessions"),
    "participants": ("sfu_participants", "media sessions"),
    "publishers": ("sfu_publishers", "participants publishing at least one track"),
    "subscribers": ("sfu_subscribers", "participants receiving at least one track"),
    "published_tracks": ("sfu_published_tracks", "tracks published"),
}


# Sfu.stats() key -> (metric name, help).
SFU_COUNTERS = {
    "received_packets": ("sfu_received_packets", "RTP packets received from publishers"),
    "forwarded_packets": ("sfu_forwarded_packets", "RTP packets forwarded to subscribers"),
    "forwarded_bytes": ("sfu_forwarded_bytes", "RTP bytes forwarded to subscribers"),
    "batch_sends": ("sfu_batch_sends", "UDP sends that carried forwarded packets in runs "
                    "(one per subscriber and event-loop turn, sfu/outbox.py)"),
    "batch_packets": ("sfu_batch_packets", "forwarded packets those sends carried"),
    "pli_received": ("sfu_pli_received", "PLIs received from subscribers"),
    "fir_received": ("sfu_fir_received", "FIRs received from subscribers"),
    "plis_sent": ("sfu_pli_sent", "PLIs sent to publishers (after throttling)"),
    "plis_throttled": ("sfu_pli_throttled", "key frame requests merged by the throttle"),
    "keyframe_requests": ("sfu_keyframe_requests", "key frame requests, any reason"),
    "nacks_received": ("sfu_nacks_received", "NACK packets received from subscribers"),
    "nack_misses": ("sfu_nack_misses", "NACKed packets no longer in the RTX cache"),
    "rtx_sent": ("sfu_rtx_sent", "RTX retransmissions sent"),
    "sr_received": ("sfu_sr_received", "RTCP sender reports received"),
    "sr_sent": ("sfu_sr_sent", "RTCP sender reports sent (translated)"),
    "rr_received": ("sfu_rr_received", "RTCP receiver reports received"),
    "rr_sent": ("sfu_rr_sent", "RTCP receiver reports sent"),
    "remb_received": ("sfu_remb_received", "REMB messages received"),
    "rtcp_received": ("sfu_rtcp_received", "well-formed RTCP datagrams (compound packets) "
                      "received; malformed ones are sfu_dropped_packets{reason=malformed_rtcp}"),
    "rtcp_ignored": ("sfu_rtcp_ignored", "RTCP packets in them the SFU does not act on "
                     "(SDES, BYE, XR, APP, unknown feedback, feedback on the wrong PC)"),
    "bad_audio_level": ("sfu_bad_audio_level", "audio-level elements not one octet "
                        "(RFC 6464 §3): the packet is forwarded without a level"),
    "nack_pending": ("sfu_nack_pending", "NACKed packets still being repaired upstream"),
    "sub_offers": ("sfu_sub_offers", "offers sent on subscribe PCs (a burst of changes is "
                   "folded into one, docs/SFU.md \"Join storms\")"),
    # upstream loss recovery and downlink budgets (docs/SFU.md "Loss and congestion")
    "upstream_nacks_sent": ("sfu_upstream_nacks_sent", "NACK packets sent to publishers"),
    "upstream_nacked": ("sfu_upstream_nacked", "sequence numbers NACKed to publishers, "
                        "retries included"),
    "upstream_recovered": ("sfu_upstream_recovered", "publisher packets repaired by RTX"),
    "upstream_late": ("sfu_upstream_late", "publisher packets that filled a hole late"),
    "upstream_unrepaired": ("sfu_upstream_unrepaired", "publisher holes given up on"),
    "upstream_resets": ("sfu_upstream_resets", "publisher sequence jumps too large to repair"),
    "rtx_received": ("sfu_rtx_received", "RTX packets received from publishers"),
    "keyframe_requests_upstream_loss": ("sfu_keyframe_requests_upstream_loss",
                                        "key frame requests after unrepaired uplink loss"),
    "bwe_pauses": ("sfu_bwe_pauses", "video streams paused for a subscriber's budget"),
    "bwe_resumes": ("sfu_bwe_resumes", "video streams resumed within a subscriber's budget"),
    "probes_started": ("sfu_probes_started", "bandwidth probes started for subscribers"),
    "probes_sent": ("sfu_probe_packets", "padding packets sent to probe a downlink"),
    # --bwe transport-cc (docs/SFU.md "Send-side estimate")
    "twcc_feedback_received": ("sfu_twcc_feedback_received", "transport-wide congestion "
                               "control feedback packets received from subscribers"),
    "twcc_declined": ("sfu_twcc_declined", "sub answers that declined the transport-wide "
                      "sequence number (that subscriber's REMB is used)"),
    "general_path": ("sfu_general_path", "slot-packets Slot.forward handled instead of the "
                     "compiled fan-out (paced, transport-cc or unusual packets)"),
    # simulcast (docs/SFU.md "Simulcast")
    "simulcast_ssrcs_bound": ("sfu_simulcast_ssrcs_bound", "publisher SSRCs bound to a "
                              "simulcast layer by their RID or repaired-RID extension"),
    "simulcast_switch_requests": ("sfu_simulcast_switch_requests", "layer switches decided "
                                  "for a subscriber's slot, each waiting for a key frame"),
    "simulcast_switches": ("sfu_simulcast_switches", "layer switches made (a slot moved to "
                           "another layer of the same track)"),
    "simulcast_switches_up": ("sfu_simulcast_switches_up", "of those, to a higher layer"),
    "simulcast_switches_down": ("sfu_simulcast_switches_down", "of those, to a lower layer"),
    "simulcast_late_repairs": ("sfu_simulcast_late_repairs", "upstream repairs sent into "
                               "a hole a slot left on a layer it has switched away from"),
    "keyframe_requests_layer_switch": ("sfu_keyframe_requests_layer_switch",
                                       "key frame requests for a pending layer switch"),
    "video_constraints": ("sfu_video_constraints", "sfu-video-constraints messages applied"),
    "temporal_dropped": ("sfu_temporal_dropped", "packets of a forwarded layer not sent to a "
                         "subscriber for their VP8 temporal layer (TID above its target)"),
    "temporal_padding": ("sfu_temporal_padding", "padding packets sent in the place of a "
                         "late packet (or its NACK) of a picture the TID filter dropped"),
    "temporal_switches_down": ("sfu_temporal_switches_down",
                               "temporal targets lowered for a subscriber's slot"),
    "temporal_switches_up": ("sfu_temporal_switches_up",
                             "temporal targets raised (or back to all layers)"),
    "srtp_forgotten": ("sfu_srtp_forgotten", "libsrtp contexts removed for SSRCs the SFU "
                       "does not forward (docs/SFU.md \"Ingress limit\")"),
    "joins": ("sfu_joins", "media sessions started"),
    "leaves": ("sfu_leaves", "media sessions ended"),
    "transport_failures": ("sfu_transport_failures", "ICE/DTLS failures or silent peers"),
    "errors": ("sfu_errors", "sfu-error messages sent to clients"),
    "loop_samples": ("sfu_loop_probes", "10 ms probes of the media loop (sfu/pauses.py)"),
}


# sfu/pauses.py's "<meter>_ge_<n>ms" counters -> label ``kind`` of sfu_stops
STOP_KINDS = {"loop_lag": "late", "loop_runqueue": "runqueue", "loop_offcpu": "offcpu",
              "gc_pause": "gc"}
STOP_KEY = re.compile(r"(loop_lag|loop_runqueue|loop_offcpu|gc_pause)_ge_(\d+)ms")
GC_PASSES = re.compile(r"gc_gen(\d)_passes")


def _stops(stats: Mapping[str, int]) -> Iterator[Metric]:
    """The media loop's stop meters (sfu/pauses.py): what held packets back, and how long."""
    stops = CounterMetricFamily(
        PREFIX + "sfu_stops", "media loop stops of at least at_least_ms: late = the 10 ms "
        "probe woke late, runqueue / offcpu = of that, waiting for a core / off the CPU "
        "(blocked, or hypervisor steal), gc = cyclic GC passes",
        labels=["kind", "at_least_ms"])
    passes = CounterMetricFamily(PREFIX + "sfu_gc_passes", "cyclic GC passes, by generation",
                                 labels=["generation"])
    for key, value in sorted(stats.items()):
        if m := STOP_KEY.fullmatch(key):
            stops.add_metric([STOP_KINDS[m[1]], m[2]], value)
        elif m := GC_PASSES.fullmatch(key):
            passes.add_metric([m[1]], value)
    yield stops
    yield passes
    yield _counter("sfu_gc_pause_seconds", "time spent in cyclic GC passes",
                   stats.get("gc_pause_us", 0) / 1e6)


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, help_text, value=value)


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, help_text, value=value)


def _labelled(
    name: str, help_text: str, label: str, values: Mapping[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, help_text, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class ServerCollector(Collector):
    """Reads one SignalingServer (and its SFU, if any) at every scrape."""

    def __init__(self, server: SignalingServer, lag: LoopLag) -> None:
        self.server = server
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        server = self.server
        stats = server.stats
        yield _gauge("rooms", "rooms known to the signaling server", len(server.rooms.rooms))
        yield _gauge("participants", "participants admitted and connected", len(server.conns))
        yield _gauge("ws_open", "WebSocket connections open", sum(server.per_ip.values()))
        backlog = getattr(server, "backlog", None)
        yield _gauge("ws_queued_bytes", "bytes queued for sockets, not yet taken by the kernel",
                     getattr(backlog, "total", 0))
        yield _gauge("ws_queued_bytes_peak", "largest ws_queued_bytes since start",
                     getattr(backlog, "peak", 0))
        for key, (name, help_text) in SIGNALING_COUNTERS.items():
            yield _counter(name, help_text, stats.get(key, 0))
        errors = {k.split(".", 1)[1]: v for k, v in stats.items() if k.startswith("errors.")}
        yield _labelled("signaling_errors", "typed errors sent, by id (docs/PROTOCOL.md)",
                        "id", errors)
        refused = {reason: errors.get(reason, 0) for reason in ADMISSION_REFUSALS}
        refused["wrong-password"] = stats.get("admission_failures", 0)
        yield _labelled("admission_failures", "join attempts refused, by reason", "reason",
                        refused)
        closes = {k.split(".", 1)[1]: v for k, v in stats.items() if k.startswith("closes.")}
        yield _labelled("signaling_closes", "sockets the server closed, by error id", "id",
                        closes)
        yield _counter("rate_limit_closes", "sockets closed for exceeding the message rate",
                       closes.get("rate-limited", 0))
        yield from self._media()
        yield from self._cluster()
        yield _gauge("event_loop_lag_last_seconds", "lateness of the last 250 ms loop probe",
                     self.lag.last)
        yield _gauge("event_loop_lag_max_seconds", "largest loop probe lateness since start",
                     self.lag.max)
        lag_sum = CounterMetricFamily(PREFIX + "event_loop_lag_seconds_total",
                                      "sum of loop probe lateness", value=self.lag.total)
        yield lag_sum

    def _cluster(self) -> Iterator[Metric]:
        cluster = getattr(self.server, "cluster", None)
        if cluster is None:  # one node: no cluster families at all
            return
        gauges = cluster.gauges()
        yield _gauge("cluster_redis_up", "1 if this node's last renewal reached Redis",
                     gauges.get("redis_up", 0))
        yield _gauge("cluster_relay_subscribed", "1 while this node reads its relay channel",
                     gauges.get("relay_subscribed", 0))
        yield _gauge("cluster_bridged_sockets", "sockets of this node bridged to another node",
                     len(self.server.bridges))
        yield _gauge("cluster_hosted_bridged_sockets",
                     "sockets bridged here from another node, open now", len(self.server.relayed))
        yield _counter("cluster_redis_errors", "operations on Redis that failed or timed out",
                       cluster.stats.get("redis_errors", 0))
        yield _counter("cluster_registrations",
                       "times this node (re-)registered after Redis was unreachable or at start",
                       cluster.stats.get("registrations", 0))
        for key, (name, help_text) in CLUSTER_COUNTERS.items():
            yield _counter(name, help_text, self.server.stats.get(key, 0))

    def _media(self) -> Iterator[Metric]:
        media: Any = self.server.media
        stats_of = getattr(media, "stats", None)
        if media is None or not callable(stats_of):
            return
        stats: dict[str, int] = stats_of()
        gauges_of = getattr(media, "gauges", None)
        gauges: dict[str, int] = gauges_of() if callable(gauges_of) else {}
        for key, (name, help_text) in SFU_GAUGES.items():
            yield _gauge(name, help_text, gauges.get(key, 0))
        for key, (name, help_text) in SFU_COUNTERS.items():
            yield _counter(name, help_text, stats.get(key, 0))
        drops = {k[5:]: v for k, v in stats.items() if k.startswith("drop_")}
        yield _labelled("sfu_dropped_packets", "packets not forwarded, by reason", "reason",
                        drops)
        errors = {k[6:]: v for k, v in stats.items() if k.startswith("error_")}
        yield _labelled("sfu_error_messages", "sfu-error messages by id", "id", errors)
        yield from _stops(stats)
        workers_of = getattr(media, "worker_stats", None)
        if callable(workers_of):
            yield from _workers(workers_of())


def _workers(workers: list[WorkerStats]) -> Iterator[Metric]:
    """Per worker process of ``SfuWorkers`` (label ``worker``: its index, 0..N-1)."""
    yield _gauge("sfu_workers", "SFU worker processes running", sum(w.alive for w in workers))
    Family = type[GaugeMetricFamily] | type[CounterMetricFamily]
    families: list[tuple[Family, str, str, Callable[[WorkerStats], float]]] = [
        (GaugeMetricFamily, "sfu_worker_up", "1 if the worker process is running",
         lambda w: float(w.alive)),
        (CounterMetricFamily, "sfu_worker_restarts", "times the worker was restarted",
         lambda w: w.restarts),
        (GaugeMetricFamily, "sfu_worker_rooms", "rooms on the worker",
         lambda w: w.gauges.get("rooms", 0)),
        (GaugeMetricFamily, "sfu_worker_participants", "media sessions on the worker",
         lambda w: w.gauges.get("participants", 0)),
        (CounterMetricFamily, "sfu_worker_received_packets",
         "RTP packets received by the worker (since it started)",
         lambda w: w.counters.get("received_packets", 0)),
        (CounterMetricFamily, "sfu_worker_forwarded_packets",
         "RTP packets forwarded by the worker (since it started)",
         lambda w: w.counters.get("forwarded_packets", 0)),
        (CounterMetricFamily, "sfu_worker_cpu_seconds", "CPU time of the worker process",
         lambda w: w.gauges.get("cpu_seconds", 0.0)),
        (GaugeMetricFamily, "sfu_worker_event_loop_lag_max_seconds",
         "largest loop probe lateness in the worker since it started",
         lambda w: w.gauges.get("loop_lag_max", 0.0)),
    ]
    for kind, name, help_text, get in families:
        family = kind(PREFIX + name, help_text, labels=["worker"])
        for w in workers:
            family.add_metric([str(w.index)], get(w))
        yield family


class Metrics:
    """The registry of one server: ``render()`` is the /metrics body.

    ``SignalingServer(cfg, media, metrics=Metrics)``: the server calls it with itself
    (signaling/server.py ``MetricsExporter``), then ``start()`` and ``stop()`` with its app.
    """

    content_type = CONTENT_TYPE

    def __init__(self, server: SignalingServer) -> None:
        self.lag = LoopLag()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServerCollector(server, self.lag))

    def start(self) -> None:
        self.lag.start()

    async def stop(self) -> None:
        await self.lag.stop()

    def render(self) -> bytes:
        return generate_latest(self.registry)
