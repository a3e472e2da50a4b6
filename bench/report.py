"""Results: the terminal table, the mesh comparison, the JSON file and the PNG plot."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from .scenarios import build

UPLINK = 10_000_000  # bit/s: the uplink a mesh participant is assumed to have
# bytes on the wire per packet besides the media payload: IPv4 20 + UDP 8 + RTP 12
# (RFC 3550 §5.1) + a one-byte-header extension block 8 (RFC 8285 §4.2) + SRTP auth tag 10
# (RFC 3711 §4.2, AES_CM_128_HMAC_SHA1_80)
PACKET_OVERHEAD = 58
COLORS = {"sealroom": "tab:green", "reflector": "tab:orange", "janus": "tab:blue",
          "mediarelay": "tab:red"}


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(results: list[dict[str, Any]]) -> str:
    head = ("system", "N", "offered/s", "fwd pkt/s", "loss %", "p50 ms", "p99 ms", "µs/pkt",
            "srv CPU", "RSS MB", "gen CPU", "max pkt/s", "max (loss)", "notes")
    rows = [head]
    for r in results:
        notes = []
        if r.get("error"):
            notes.append("ERROR " + r["error"][:60])
        if r.get("gen_saturated"):
            notes.append("GENERATOR SATURATED")
        if (r.get("gen_late_fraction") or 0) > 0.05:
            notes.append(f"gen timers late {100 * r['gen_late_fraction']:.0f}%")
        busy = (r.get("other_load_cores") or 0) + (r.get("steal_cores") or 0)
        if busy > 0.25:
            notes.append(f"busy machine: other {r['other_load_cores']:.1f} + steal "
                         f"{r['steal_cores']:.1f} cores")
        if (r.get("loss") or 0) > 0.01:
            notes.append("OVERLOADED (CPU/packet not meaningful)")
        if r.get("max_generator_bound"):
            notes.append("max is a lower bound: the generator saturated first")
        if r.get("missing_streams"):
            notes.append(f"{r['missing_streams']} streams never arrived")
        rows.append((
            r["system"], str(r["participants"]), _fmt(r.get("offered_pps"), ".0f"),
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
        "| system | N | offered pkt/s | forwarded pkt/s | loss % | p50 ms | p99 ms "
        "| server µs/pkt | server CPU | RSS MB | gen CPU | max pkt/s held "
        "| max pkt/s (loss only) | notes |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        notes = []
        if r.get("error"):
            notes.append("error: " + r["error"][:60])
        if r.get("gen_saturated"):
            notes.append("generator saturated")
        if (r.get("gen_late_fraction") or 0) > 0.05:
            notes.append(f"gen timers late {100 * r['gen_late_fraction']:.0f} %")
        if (r.get("loss") or 0) > 0.01:
            notes.append("**overloaded** (CPU/packet not meaningful)")
        if r.get("max_generator_bound"):
            notes.append("max: lower bound, the generator saturated first")
        if (r.get("other_load_cores") or 0) + (r.get("steal_cores") or 0) > 0.25:
            notes.append(f"busy machine: other {r['other_load_cores']:.1f} + steal "
                         f"{r['steal_cores']:.1f} cores")
        loss = None if r.get("loss") is None else 100 * r["loss"]
        cpu = None if r.get("server_cpu") is None else 100 * r["server_cpu"]
        gen = None if r.get("gen_cpu") is None else 100 * r["gen_cpu"]
        lines.append(
            f"| {r['system']} | {r['participants']} | {_fmt(r.get('offered_pps'), '.0f')} "
            f"| {_fmt(r.get('forwarded_pps'), '.0f')} | {_fmt(loss, '.2f')} "
            f"| {_fmt(r.get('p50_ms'), '.2f')} | {_fmt(r.get('p99_ms'), '.1f')} "
            f"| {_fmt(r.get('server_us_per_packet'), '.1f')} | {_fmt(cpu, '.0f')} % "
            f"| {_fmt(r.get('server_rss_mb'), '.0f')} | {_fmt(gen, '.0f')} % "
            f"| {_fmt(r.get('max_forwarded_pps'), '.0f')} "
            f"| {_fmt(r.get('max_forwarded_pps_loss_only'), '.0f')} | {'; '.join(notes)} |")
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
    by = {(r["system"], r["participants"]): r for r in results
          if not r.get("error") and (r.get("loss") is None or r["loss"] <= 0.01)
          and r.get("forwarded_pps")}
    out = []
    for (system, n), r in sorted(by.items(), key=lambda kv: kv[0][1]):
        if system != "sealroom" or r.get("server_us_per_packet") is None:
            continue
        row: dict[str, Any] = {"participants": n}
        for other in ("janus", "reflector", "mediarelay"):
            o = by.get((other, n))
            if o and o.get("server_us_per_packet"):
                row[f"sealroom/{other}"] = r["server_us_per_packet"] / o["server_us_per_packet"]
        if len(row) > 1:
            out.append(row)
    return out


def mesh(scenario: str, sizes: list[int]) -> list[dict[str, Any]]:
    """Per-client upload in a full mesh vs through an SFU, and where 10 Mbit/s runs out."""
    out = []
    for n in sizes:
        s = build(scenario, n)
        per_copy = 0.0  # bit/s one publisher sends for one receiver
        for m in s.members:
            bps = sum((spec.frame_bytes() * 8 * spec.rate
                       + PACKET_OVERHEAD * 8 * spec.packet_rate()) for _, spec in m.streams())
            per_copy = max(per_copy, bps)
        receivers = n - 1
        mesh_up = per_copy * receivers
        out.append({"participants": n, "sfu_upload_bps": per_copy, "mesh_upload_bps": mesh_up,
                    "mesh_fits_10mbps": mesh_up <= UPLINK})
    return out


def mesh_limit(scenario: str) -> int | None:
    """Largest room a full mesh carries on a 10 Mbit/s uplink (publisher's upload)."""
    s = build(scenario, 2)
    per_copy = max(sum(spec.frame_bytes() * 8 * spec.rate
                       + PACKET_OVERHEAD * 8 * spec.packet_rate() for _, spec in m.streams())
                   for m in s.members)
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
    systems = sorted({r["system"] for r in results})
    for system in systems:
        pts = sorted((r["participants"], r) for r in results
                     if r["system"] == system and not r.get("error"))
        if not pts:
            continue
        xs = [n for n, _ in pts]
        color = COLORS.get(system, "black")
        ax1.plot(xs, [r.get("forwarded_pps") or 0 for _, r in pts], marker="o", label=system,
                 color=color)
        if any(r.get("max_forwarded_pps") for _, r in pts):
            ax1.plot(xs, [r.get("max_forwarded_pps") or float("nan") for _, r in pts],
                     linestyle="--", marker="x", label=f"{system} max (≤0.1% loss, p99≤5ms)",
                     color=color)
        if any(r.get("max_forwarded_pps_loss_only") for _, r in pts):
            ax1.plot(xs, [r.get("max_forwarded_pps_loss_only") or float("nan") for _, r in pts],
                     linestyle=":", marker="+", label=f"{system} max (≤0.1% loss)",
                     color=color)
        ax2.plot(xs, [r.get("server_us_per_packet") or float("nan")
                      if r.get("loss") is None or r["loss"] <= 0.01 else float("nan")
                      for _, r in pts], marker="o", label=system, color=color)
    offered = sorted({(r["participants"], build(r["scenario"]["name"], r["participants"],
                                                r["scenario"]["last_n"] or 4)
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
    ax2.set_title("cost per packet, one core (points with > 1 % loss left out)")
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
        if args.png is not None:
            plot(args.png / f"bench-{doc['scenario']}.png", doc["results"],
                 f"{doc['scenario']}: " + ", ".join(doc["systems"]))
        print(f"### {doc['scenario']} ({name})\n")
        print(markdown(doc))
        print()
        print(mesh_text(doc["scenario"], doc["participants"]))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
