"""Results: the terminal table, the mesh comparison, the JSON file and the PNG plot."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from .media import StreamSpec
from .scenarios import LAYERS, Member, build

UPLINK = 10_000_000  # bit/s: the uplink a mesh participant is assumed to have
# bytes on the wire per packet besides the media payload: IPv4 20 + UDP 8 + RTP 12
# (RFC 3550 §5.1) + a one-byte-header extension block 8 (RFC 8285 §4.2) + SRTP auth tag 10
# (RFC 3711 §4.2, AES_CM_128_HMAC_SHA1_80)
PACKET_OVERHEAD = 58
COLORS = {"sealroom": "tab:green", "sealroom-sendto": "tab:olive", "reflector": "tab:orange",
          "janus": "tab:blue", "mediarelay": "tab:red"}


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def stem(scenario: str, rooms: int = 1, workers: list[int] | None = None,
         uplink_loss: float = 0.0) -> str:
    """File name stem of a run: ``bench-<scenario>[-r<rooms>][-w<counts>][-loss<%>]``."""
    out = f"bench-{scenario}"
    if rooms > 1:
        out += f"-r{rooms}"
    if workers and workers != [0]:
        out += "-w" + "_".join(map(str, workers))
    if uplink_loss > 0:
        out += f"-loss{100 * uplink_loss:g}"
    return out


def title(scenario: str, systems: list[str], rooms: int = 1) -> str:
    return (f"{scenario}" + (f" × {rooms} rooms" if rooms > 1 else "") + ": "
            + ", ".join(systems))


def label(r: dict[str, Any]) -> str:
    """A result's series: the system, and its worker count and rooms if any."""
    out = str(r["system"])
    if r.get("workers"):
        out += f" W={r['workers']}"
    if (r.get("rooms") or 1) > 1:
        out += f" R={r['rooms']}"
    return out


def _notes(r: dict[str, Any], md: bool) -> list[str]:
    notes = []
    if r.get("error"):
        notes.append(("error: " if md else "ERROR ") + r["error"][:60])
    if r.get("gen_saturated"):
        notes.append("generator saturated" if md else "GENERATOR SATURATED")
    if r.get("gen_shares_core"):
        pin = r.get("pinning") or {}
        core = pin.get("generators")
        who = [f"worker {i}" for i, c in enumerate(pin.get("workers") or []) if c == core]
        notes.append(f"generators share core {core} with "
                     + (", ".join(who) if who else "the server"))
    if (r.get("rate_scale") or 1.0) != 1.0:
        notes.append(f"packet rate ×{r['rate_scale']:g}")
    idle = r.get("idle")
    if idle is not None and not idle.get("held"):
        # the default polls (Method, "Idle cores poll"); say so when this point did not
        notes.append("idle cores could halt" + ("" if idle.get("mode") == "halt"
                                            else f" ({idle.get('reason')})"))
    user, p99 = r.get("p99_user_ms"), r.get("p99_ms")
    if user is not None and p99 is not None and user > p99 + 1.0:
        # p99 is to the packet reaching the receiver's socket; the generator read it later
        notes.append(f"p99 to the generator's read {user:.1f} ms")
    if (r.get("gen_late_fraction") or 0) > 0.05:
        notes.append(f"gen timers late {100 * r['gen_late_fraction']:.0f}%")
    calm, windows = r.get("calm_windows"), len(r.get("windows") or [])
    if calm is not None and calm < windows:
        notes.append(f"p99 over the {calm} of {windows} windows without steal "
                     + (f"{r['p99_calm_ms']:.1f} ms" if r.get("p99_calm_ms") is not None
                        else "-"))
    busy = (r.get("other_load_cores") or 0) + (r.get("steal_cores") or 0)
    if busy > 0.25:
        notes.append(f"busy machine: other {r['other_load_cores']:.1f} + steal "
                     f"{r['steal_cores']:.1f} cores")
    if (r.get("loss") or 0) > 0.01:
        notes.append("**overloaded** (CPU/packet not meaningful)" if md
                     else "OVERLOADED (CPU/packet not meaningful)")
    if r.get("max_generator_bound"):
        notes.append("max is a lower bound: the generator saturated first")
    if r.get("missing_streams"):
        notes.append(f"{r['missing_streams']} streams never arrived")
    unexpected = r.get("unexpected_pps") or 0
    if unexpected > 0.01 * (r.get("forwarded_pps") or 0) and unexpected > 1:
        notes.append(f"{unexpected:.0f} pkt/s not expected (silence forwarded?)")
    up = r.get("uplink")
    if up:
        share = up.get("recovered_share")
        # loss % is of the packets sent; the withheld ones are here, and the repaired
        # ones (late by a NACK round trip) are in the latency figures
        notes.append(f"uplink loss {100 * (r.get('uplink_loss') or 0):g} %: "
                     f"{up['withheld']} withheld, "
                     + ("none to repair" if share is None else
                        f"{100 * share:.1f} % repaired") + " (p50/p99 include repairs)")
    return notes


def table(results: list[dict[str, Any]]) -> str:
    head = ("system", "N", "rooms", "workers", "offered/s", "fwd pkt/s", "loss %", "p50 ms",
            "p99 ms", "µs/pkt", "srv CPU", "RSS MB", "gen CPU", "max pkt/s", "max (loss)",
            "notes")
    rows = [head]
    for r in results:
        notes = _notes(r, md=False)
        rows.append((
            r["system"], str(r["participants"]), str(r.get("rooms", 1)),
            str(r.get("workers", 0)), _fmt(r.get("offered_pps"), ".0f"),
            _fmt(r.get("forwarded_pps"), ".0f"),
            _fmt(None if r.get("loss") is None else 100 * r["loss"], ".2f"),
            _fmt(r.get("p50_ms"), ".2f"), _fmt(r.get("p99_ms"), ".2f"),
            _fmt(r.get("server_us_per_packet"), ".1f"),
            _fmt(None if r.get("server_cpu") is None else 100 * r["server_cpu"], ".0f") + "%",
            _fmt(r.get("server_rss_mb"), ".0f"),
            _fmt(None if r.get("gen_cpu") is None else 100 * r["gen_cpu"], ".0f") + "%",
            _fmt(r.get("max_forwarded_pps"), ".0f"),
            _fmt(r.get("max_forwarded_pps_loss_only"), ".0f"), "; ".join(notes)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if 0 < i < len(head) - 1 else c.ljust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def markdown(doc: dict[str, Any]) -> str:
    """A result file as Markdown tables (for docs/BENCHMARKS.md)."""
    results = doc["results"]
    lines = [
        "| system | N | rooms | workers | offered pkt/s | forwarded pkt/s | loss % | p50 ms "
        "| p99 ms | server µs/pkt | server CPU | RSS MB | gen CPU | max pkt/s held "
        "| max pkt/s (loss only) | notes |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        notes = _notes(r, md=True)
        loss = None if r.get("loss") is None else 100 * r["loss"]
        cpu = None if r.get("server_cpu") is None else 100 * r["server_cpu"]
        gen = None if r.get("gen_cpu") is None else 100 * r["gen_cpu"]
        lines.append(
            f"| {r['system']} | {r['participants']} | {r.get('rooms', 1)} "
            f"| {r.get('workers', 0)} | {_fmt(r.get('offered_pps'), '.0f')} "
            f"| {_fmt(r.get('forwarded_pps'), '.0f')} | {_fmt(loss, '.2f')} "
            f"| {_fmt(r.get('p50_ms'), '.2f')} | {_fmt(r.get('p99_ms'), '.1f')} "
            f"| {_fmt(r.get('server_us_per_packet'), '.1f')} | {_fmt(cpu, '.0f')} % "
            f"| {_fmt(r.get('server_rss_mb'), '.0f')} | {_fmt(gen, '.0f')} % "
            f"| {_fmt(r.get('max_forwarded_pps'), '.0f')} "
            f"| {_fmt(r.get('max_forwarded_pps_loss_only'), '.0f')} | {'; '.join(notes)} |")
    per_worker = [(r, w) for r in results for w in r.get("per_worker") or []]
    if per_worker:
        lines += ["", "Per SFU worker (CPU of its process; packets the rooms on it forwarded):",
                  "", "| system | N | rooms | workers | worker | core | forwarded pkt/s "
                  "| CPU | µs/pkt |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r, w in per_worker:
            cpu = None if w.get("cpu") is None else 100 * w["cpu"]
            lines.append(
                f"| {r['system']} | {r['participants']} | {r.get('rooms', 1)} "
                f"| {r.get('workers', 0)} | {w['index']} | {_fmt(w.get('core'), 'd')} "
                f"| {_fmt(w.get('forwarded_pps'), '.0f')} | {_fmt(cpu, '.0f')} % "
                f"| {_fmt(w.get('us_per_packet'), '.1f')} |")
    up_rows = uplink_rows(results)
    if up_rows:
        lines += ["", "Uplink loss: packets the publishers withheld and what became of them "
                  "(sums over the windows; per receiver: recovered + never delivered = "
                  "withheld × receivers); the server's own upstream counters:", "",
                  "| system | N | uplink loss % | video pkts | withheld | NACKed | resent | "
                  "recovered | never delivered | duplicates | recovered % | residual loss % "
                  "| RTX | SFU nacks sent | SFU nacked | SFU recovered | SFU late "
                  "| SFU unrepaired | SFU rtx received |",
                  "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|"]
        for cells in up_rows:
            lines.append("| " + " | ".join(cells) + " |")
    rat = ratios(results)
    if rat:
        lines += ["", "CPU per forwarded packet, ratios:", ""]
        for row in rat:
            lines.append(f"* N={row['participants']}: " + ", ".join(
                f"{k} = {v:.2f}×" for k, v in row.items() if k != "participants"))
    return "\n".join(lines)


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CPU per forwarded packet of sealroom over each other system, per room size.

    Only where both forwarded what they were offered (loss ≤ 1 %, or not measurable for a
    re-encoding system): an overloaded system's CPU per *counted* packet means nothing.
    """
    ok = [r for r in results
          if not r.get("error") and (r.get("loss") is None or r["loss"] <= 0.01)
          and r.get("forwarded_pps") and (r.get("rooms") or 1) == 1]
    others = {(r["system"], r["participants"]): r for r in ok if r["system"] != "sealroom"}
    rows: dict[int, dict[str, Any]] = {}
    for r in sorted(ok, key=lambda r: (r["participants"], r.get("workers") or 0)):
        if r["system"] != "sealroom" or r.get("server_us_per_packet") is None:
            continue
        n = r["participants"]
        name = "sealroom" + (f"(W={r['workers']})" if r.get("workers") else "")
        for other in ("janus", "reflector", "mediarelay", "sealroom-sendto"):
            o = others.get((other, n))
            if o and o.get("server_us_per_packet"):
                row = rows.setdefault(n, {"participants": n})
                row[f"{name}/{other}"] = r["server_us_per_packet"] / o["server_us_per_packet"]
    return [rows[n] for n in sorted(rows)]


UPLINK_HEAD = ("system", "N", "uplink %", "video pkts", "withheld", "NACKed", "resent",
               "recovered", "never", "dupes", "recov %", "resid loss %", "RTX",
               "SFU nacks", "SFU nacked", "SFU recov", "SFU late", "SFU unrep", "SFU rtx rx")


def uplink_rows(results: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per result with uplink loss, in ``UPLINK_HEAD``'s order."""
    rows = []
    for r in results:
        up = r.get("uplink")
        if not up:
            continue
        gen = up.get("generator") or {}
        rtx, plain = gen.get("rtx_streams", 0), gen.get("plain_streams", 0)
        # how the publishers answered NACKs: RTX where negotiated, else the packet again;
        # "-" where nothing was negotiated and nobody asked (the bare reflector)
        mode = "-" if not rtx and not gen.get("nacks") else "rtx" if rtx and not plain \
            else "plain" if not rtx else f"rtx {rtx}, plain {plain}"
        srv = up.get("server")
        resid = r.get("residual_loss")
        rows.append((
            label(r), str(r["participants"]), f"{100 * (r.get('uplink_loss') or 0):g}",
            str(up["video_packets"]), str(up["withheld"]), str(up["nacked"]),
            str(up["resent"]), str(up["recovered"]), str(up["unrecovered"]),
            str(up["duplicates"]),
            _fmt(None if up.get("recovered_share") is None else 100 * up["recovered_share"],
                 ".1f"),
            _fmt(None if resid is None else 100 * resid, ".2f"), mode,
            *(("-",) * 6 if srv is None else tuple(str(srv.get(k, 0)) for k in (
                "upstream_nacks_sent", "upstream_nacked", "upstream_recovered",
                "upstream_late", "upstream_unrepaired", "rtx_received")))))
    return rows


def uplink_text(results: list[dict[str, Any]]) -> str:
    """The uplink-loss rows as a plain table; empty without uplink loss."""
    rows = uplink_rows(results)
    if not rows:
        return ""
    rows = [UPLINK_HEAD, *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(UPLINK_HEAD))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(["uplink loss (withheld video packets; recovered/never per receiver; "
                      "SFU = the server's upstream counters):", *lines])


def layers_text(results: list[dict[str, Any]]) -> str:
    """simulcast: per result and layer, the packets the subscribers that asked for it
    received of those expected, and the packets of it that reached subscribers that had
    asked for another layer (sums over the windows). Empty without layers."""
    order = {rid: k for k, (rid, *_) in enumerate(LAYERS)}
    lines = []
    for r in results:
        layers = r.get("layers")
        if not layers:
            continue
        cells = []
        for rid in sorted(layers, key=lambda x: order.get(x, len(order))):
            row = layers[rid]
            share = row["received"] / row["expected"] if row["expected"] else None
            cells.append(f"{rid} {row['received']}/{row['expected']} "
                         f"({_fmt(None if share is None else 100 * share, '.2f')} %), "
                         f"wrong {row['wrong']}")
        lines.append(f"  {label(r)} N={r['participants']}: " + "; ".join(cells))
    if not lines:
        return ""
    return "\n".join(["simulcast layers (received by the subscribers that asked for the "
                      "layer / expected; wrong = reached a subscriber that asked for "
                      "another layer):", *lines])


def setup_text(results: list[dict[str, Any]]) -> str:
    """The join storm's figures (joinstorm) and the sub offers the set-up cost (sealroom);
    empty when no result has them."""
    lines = []
    for r in results:
        s = r.get("joinstorm")
        if s:
            lines.append(
                f"  {label(r)} N={s['participants']} joining within {s['join_within_s']:g} s: "
                f"{s['connected']}/{s['participants']} connected, all after "
                f"{_fmt(s['all_connected_s'], '.2f')} s; join → connected p50 "
                f"{_fmt(s['join_to_connected_p50_s'], '.2f')} s p99 "
                f"{_fmt(s['join_to_connected_p99_s'], '.2f')} s; join → first forwarded "
                f"packet p50 {_fmt(s['join_to_first_packet_p50_s'], '.2f')} s p99 "
                f"{_fmt(s['join_to_first_packet_p99_s'], '.2f')} s; failures {s['failures']}"
                + (f" {s['error_messages']}" if s["error_messages"] else "")
                + f"; sub offers per participant {_fmt(s['sub_offers_per_participant'], '.2f')}"
                f" (max {s['sub_offers_max']}, total {s['sub_offers_total']})")
        setup = r.get("setup")
        if setup:
            server = (r.get("server_counters") or {}).get("sub_offers")
            lines.append(
                f"  {label(r)} N={r['participants']}: set-up {_fmt(r.get('setup_seconds'), '.1f')}"
                f" s, sub offers answered {setup['sub_offers_total']} "
                f"({_fmt(setup['sub_offers_per_participant'], '.2f')} per participant, max "
                f"{setup['sub_offers_max']}); SFU sub_offers {_fmt(server, 'd')}"
                + (f"; sfu-errors {setup['errors']}" if setup["errors"] else ""))
    if not lines:
        return ""
    return "\n".join(["set-up:", *lines])


def workers_text(results: list[dict[str, Any]]) -> str:
    """Per SFU worker: core, CPU share, packets/s its rooms forwarded, µs per packet; and
    what the runner process itself used (signaling relay). Empty without workers."""
    lines = []
    for r in results:
        rows = r.get("per_worker")
        if not rows:
            continue
        runner = (r.get("server_cpu") or 0.0) - sum(w.get("cpu") or 0.0 for w in rows)
        lines.append(f"  {label(r)} N={r['participants']}: runner "
                     f"{100 * max(0.0, runner):.0f}% CPU")
        for w in rows:
            cpu = None if w.get("cpu") is None else 100 * w["cpu"]
            lines.append(f"    worker {w['index']} (core {_fmt(w.get('core'), 'd')}, pid "
                         f"{w.get('pid')}): {_fmt(w.get('forwarded_pps'), '.0f')} pkt/s, "
                         f"{_fmt(cpu, '.0f')}% CPU, "
                         f"{_fmt(w.get('us_per_packet'), '.1f')} µs/pkt")
    if not lines:
        return ""
    return "\n".join(["per SFU worker:", *lines])


def _wire_bps(specs: list[StreamSpec]) -> float:
    return sum(spec.frame_bytes() * 8 * spec.rate + PACKET_OVERHEAD * 8 * spec.packet_rate()
               for spec in specs)


def _uploads(m: Member) -> tuple[float, float]:
    """(to an SFU, per receiver in a mesh) in bit/s on the wire: an SFU gets one copy of
    every stream (all simulcast layers); a mesh peer sends each receiver one encoding
    (of a simulcast camera, the top layer)."""
    specs = [spec for _, spec in m.streams()]
    per_receiver = [spec for spec in specs if spec.rid is None] + m.layers[-1:]
    return _wire_bps(specs), _wire_bps(per_receiver)


def mesh(scenario: str, sizes: list[int]) -> list[dict[str, Any]]:
    """Per-client upload in a full mesh vs through an SFU, and where 10 Mbit/s runs out."""
    out = []
    for n in sizes:
        s = build(scenario, n)
        sfu_up = per_copy = 0.0  # bit/s one publisher sends: to the SFU, per mesh receiver
        for m in s.members:
            to_sfu, copy = _uploads(m)
            sfu_up, per_copy = max(sfu_up, to_sfu), max(per_copy, copy)
        receivers = n - 1
        mesh_up = per_copy * receivers
        out.append({"participants": n, "sfu_upload_bps": sfu_up, "mesh_upload_bps": mesh_up,
                    "mesh_fits_10mbps": mesh_up <= UPLINK})
    return out


def mesh_limit(scenario: str) -> int | None:
    """Largest room a full mesh carries on a 10 Mbit/s uplink (publisher's upload)."""
    s = build(scenario, 2)
    per_copy = max(_uploads(m)[1] for m in s.members)
    if per_copy <= 0:
        return None
    return int(UPLINK // per_copy) + 1


def mesh_text(scenario: str, sizes: list[int]) -> str:
    rows = mesh(scenario, sizes)
    limit = mesh_limit(scenario)
    lines = [f"mesh vs SFU upload per publishing client ({scenario}; wire bytes incl. "
             f"{PACKET_OVERHEAD} B/packet headers):"]
    for r in rows:
        lines.append(f"  N={r['participants']:>3}: SFU {r['sfu_upload_bps'] / 1e6:6.2f} Mbit/s"
                     f"   mesh {r['mesh_upload_bps'] / 1e6:7.2f} Mbit/s"
                     f"{'' if r['mesh_fits_10mbps'] else '  (> 10 Mbit/s uplink)'}")
    if limit is not None:
        lines.append(f"  a 10 Mbit/s uplink carries a mesh of at most {limit} participants; "
                     "through the SFU each publisher uploads one copy at any N")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "kernel": platform.release(),
                            "machine": platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os
    info["cpus"] = os.cpu_count()
    try:
        with open("/proc/loadavg") as f:
            info["loadavg_at_start"] = f.read().split()[:3]
    except OSError:
        pass
    return info


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")


def plot(path: Path, results: list[dict[str, Any]], title: str) -> None:
    """Forwarded pkt/s and server CPU µs per forwarded packet vs participants."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = "osD^v"
    series = sorted({label(r) for r in results})
    for name in series:
        pts = sorted(((r["participants"], r) for r in results
                      if label(r) == name and not r.get("error")), key=lambda p: p[0])
        if not pts:
            continue
        xs = [n for n, _ in pts]
        first = pts[0][1]
        color = COLORS.get(first["system"], "black")
        marker = markers[(first.get("workers") or 0) % len(markers)]
        ax1.plot(xs, [r.get("forwarded_pps") or 0 for _, r in pts], marker=marker, label=name,
                 color=color)
        if any(r.get("max_forwarded_pps") for _, r in pts):
            ax1.plot(xs, [r.get("max_forwarded_pps") or float("nan") for _, r in pts],
                     linestyle="--", marker="x", label=f"{name} max (≤0.1% loss, p99≤5ms)",
                     color=color)
        if any(r.get("max_forwarded_pps_loss_only") for _, r in pts):
            ax1.plot(xs, [r.get("max_forwarded_pps_loss_only") or float("nan") for _, r in pts],
                     linestyle=":", marker="+", label=f"{name} max (≤0.1% loss)",
                     color=color)
        ax2.plot(xs, [r.get("server_us_per_packet") or float("nan")
                      if r.get("loss") is None or r["loss"] <= 0.01 else float("nan")
                      for _, r in pts], marker=marker, label=name, color=color)
        for i in range(first.get("workers") or 0):  # per worker: its CPU / its packets
            ys = []
            for _, r in pts:
                rows = [w for w in r.get("per_worker") or [] if w["index"] == i]
                ok = r.get("loss") is None or r["loss"] <= 0.01
                ys.append(rows[0].get("us_per_packet") or float("nan") if rows and ok
                          else float("nan"))
            ax2.plot(xs, ys, linestyle=":", marker=marker, label=f"{name} worker {i}",
                     color=color, alpha=0.6)
    offered = sorted({(r["participants"], build(r["scenario"]["name"], r["participants"],
                                                r["scenario"]["last_n"] or 4,
                                                r.get("rooms") or 1)
                       .offered_packets_per_second()) for r in results})
    if offered:
        ax1.plot([n for n, _ in offered], [o for _, o in offered], color="grey", linestyle=":",
                 label="offered (nominal)")
    ax1.set_xlabel("participants")
    ax1.set_ylabel("forwarded packets/s")
    ax1.set_title("throughput")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.set_xlabel("participants")
    ax2.set_ylabel("server CPU µs per forwarded packet")
    ax2.set_title("cost per packet (points with > 1 % loss left out)")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report [--png DIR] RESULT.json…``: the results as Markdown
    (and the plots again, into DIR as bench-<scenario>.png)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.report")
    p.add_argument("--png", type=Path, default=None, help="write the plots into this folder")
    p.add_argument("files", nargs="+", type=Path)
    args = p.parse_args(argv)
    for name in args.files:
        doc = json.loads(name.read_text())
        rooms = doc.get("rooms") or 1
        if args.png is not None:
            name_stem = stem(doc["scenario"], rooms, doc.get("workers"),
                             doc.get("uplink_loss") or 0.0)
            plot(args.png / f"{name_stem}.png",
                 doc["results"], title(doc["scenario"], doc["systems"], rooms))
        print(f"### {title(doc['scenario'], doc['systems'], rooms)} ({name})\n")
        print(markdown(doc))
        print()
        print(mesh_text(doc["scenario"], doc["participants"]))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
