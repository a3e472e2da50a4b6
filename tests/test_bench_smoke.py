"""A seconds-long run of the forwarding benchmark, so that it cannot rot.

Real processes end to end: sealroom's SFU (``bench.sfu_runner``), the bare UDP reflector
and Janus VideoRoom (Debian's ``janus``, in a network namespace of its own), each driven
by the load generator doing real ICE + DTLS-SRTP (for the two SFUs).
Asserts behaviour (things were forwarded and counted, files written), never speed.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
from pathlib import Path

import pytest

from bench import cli, procstat
from sealroom import cpulatency

pytestmark = pytest.mark.media


def _children() -> set[int]:
    return procstat.children(os.getpid())


def test_smoke_run_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--systems", "sealroom,reflector,janus", "--participants", "3",
                              "--quick", "--out", str(tmp_path)])
    before = _children()
    limit_before = cpulatency.current()
    affinity = os.sched_getaffinity(0)
    assert cli.run(args) == 0
    assert _children() <= before  # every server and generator process was reaped
    assert cpulatency.current() == limit_before  # the idle-poll request was withdrawn
    assert os.sched_getaffinity(0) == affinity  # the orchestrator's pinning was undone
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert not [n for n in netns if n.startswith("srbench")]  # Janus's namespace is gone

    doc = json.loads((tmp_path / "bench-meeting.json").read_text())
    png = (tmp_path / "bench-meeting.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack("!II", png[16:24])[0] > 100
    results = {r["system"]: r for r in doc["results"]}
    assert set(results) == {"sealroom", "reflector", "janus"}
    for r in results.values():
        assert "error" not in r, r.get("error")
        assert r["missing_streams"] == 0
        # 3 participants × (audio 50/s + video 30 fps × 2 packets) × 2 receivers
        assert r["offered_pps"] == pytest.approx(3 * 110 * 2, rel=0.05)
        assert r["forwarded_pps"] > 0
        assert 0.0 <= r["loss"] <= 1.0
        assert r["p50_ms"] is not None and 0 < r["p50_ms"] <= r["p99_ms"]
        # to the socket (kernel stamp) never later than to the generator's read
        assert r["p99_user_ms"] is not None and r["p99_ms"] <= r["p99_user_ms"]
        assert r["server_rss_mb"] > 1
        assert r["server_us_per_packet"] is None or r["server_us_per_packet"] > 0
        assert len(r["windows"]) == 1
        assert "uplink" not in r and "uplink" not in r["windows"][0]  # no --uplink-loss
        pin = r["pinning"]
        if pin["generators"] is not None:  # the orchestrator stayed off the server's core
            assert pin["orchestrator"] == [pin["generators"]] != [pin["server"]]
        # idle cores polled for every system alike (the default, --idle poll)
        assert r["idle"]["mode"] == "poll"
        if os.access(cpulatency.PATH, os.W_OK):
            assert r["idle"]["held"] and r["idle"]["limit_us"] == 0
    assert doc["ratios"] and {"sealroom/reflector", "sealroom/janus"} <= set(doc["ratios"][0])
    assert doc["mesh_limit_10mbps"] > 2
    out = capsys.readouterr().out
    assert all(name in out for name in ("sealroom", "reflector", "janus", "fwd pkt/s"))


def test_smoke_rooms_and_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two rooms of last-N on two SFU worker processes: one room per worker, per-worker
    figures, the silent members' audio not forwarded, every process reaped."""
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--systems", "sealroom,reflector", "--scenario", "lastn",
                              "--participants", "4", "--last-n", "2", "--rooms", "2",
                              "--workers", "2", "--quick", "--out", str(tmp_path)])
    before = _children()
    assert cli.run(args) == 0
    assert _children() <= before

    doc = json.loads((tmp_path / "bench-lastn-r2-w2.json").read_text())
    assert doc["systems"] == ["sealroom"]  # the reflector has no rooms, no last-N
    (r,) = doc["results"]
    assert "error" not in r, r.get("error")
    assert (r["rooms"], r["workers"], r["missing_streams"]) == (2, 2, 0)
    # per room: 4 subscribers × 2 video sources × 60 pkt/s + member 0's audio to 3 others
    assert r["offered_pps"] == pytest.approx(2 * (4 * 2 * 60 + 3 * 50), rel=0.05)
    assert r["forwarded_pps"] > 0 and r["loss"] is not None
    assert r["unexpected_pps"] == 0  # silence (level 127) was not forwarded
    assert sorted(r["placement"].items()) == [("bench-0", 0), ("bench-1", 1)]
    workers = r["per_worker"]
    assert [w["index"] for w in workers] == [0, 1]
    for w in workers:
        assert w["forwarded_pps"] > 0 and w["cpu"] >= 0
        assert not os.path.exists(f"/proc/{w['pid']}")  # the worker process is gone
    assert sum(w["forwarded_pps"] for w in workers) == pytest.approx(r["forwarded_pps"])
    assert r["server_cpu"] >= sum(w["cpu"] for w in workers) - 1e-9
    cpus = sorted(os.sched_getaffinity(0))
    assert r["pinning"]["workers"] == [cpus[0], cpus[1 % len(cpus)]]
    counters = r["server_counters"]
    assert counters["worker0.joins"] == counters["worker1.joins"] == 4
    out = capsys.readouterr().out
    assert "per SFU worker" in out and "worker 1 (core" in out


def test_smoke_uplink_loss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--uplink-loss: the publishers withhold a share of their video and answer NACKs;
    sealroom and Janus get the withheld packets back to their receivers (sealroom: its
    upstream NACKs), the bare reflector cannot; every figure is there and adds up.
    """
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--systems", "sealroom,reflector,janus", "--participants", "3",
                              "--uplink-loss", "0.1", "--quick", "--out", str(tmp_path)])
    before = _children()
    assert cli.run(args) == 0
    assert _children() <= before

    doc = json.loads((tmp_path / "bench-meeting-loss10.json").read_text())
    assert doc["uplink_loss"] == 0.1 and doc["options"]["uplink_loss"] == 0.1
    results = {r["system"]: r for r in doc["results"]}
    assert set(results) == {"sealroom", "reflector", "janus"}
    for name in ("reflector", "janus", "sealroom"):  # sealroom last: see below
        r = results[name]
        assert "error" not in r, r.get("error")
        assert r["missing_streams"] == 0 and r["uplink_loss"] == 0.1
        up = r["uplink"]
        # 3 publishers × 60 video packets/s for 1 s, a tenth of them withheld
        assert 150 <= up["video_packets"] <= 200, up
        assert up["withheld"] > 0 and 0.02 <= up["withheld_share"] <= 0.25, up
        assert up["expected"] == 2 * up["withheld"]  # each to 2 receivers
        assert up["recovered"] + up["unrecovered"] == up["expected"]
        assert 0.0 <= r["loss"] <= 1.0 and 0.0 <= r["residual_loss"] <= 1.0
        gen = up["generator"]
        assert gen["rtcp_malformed"] == 0
        if name == "reflector":  # no RTCP, no NACK, nothing comes back
            assert (up["nacked"], up["resent"], up["recovered"]) == (0, 0, 0)
            assert up["server"] is None and gen["nacks"] == 0
            continue
        # both SFUs negotiated RTX on the publishers' video m-lines, NACKed the holes and
        # forwarded the repaired packets (sealroom: its upstream NACKs)
        assert gen["rtx_streams"] == 3 and gen["plain_streams"] == 0, gen
        assert up["nacked"] > 0 and up["resent"] > 0, (name, "no NACK for a hole", up)
        assert up["recovered"] > 0 and up["recovered_share"] >= 0.5, (name, up)
    sfu = results["sealroom"]["uplink"]["server"]
    assert sfu is not None and set(sfu) >= {"upstream_nacks_sent", "upstream_recovered",
                                            "rtx_received"}
    assert sfu["upstream_nacks_sent"] > 0 and sfu["rtx_received"] > 0, sfu
    assert results["janus"]["uplink"]["server"] is None  # no counters of its own here
    out = capsys.readouterr().out
    assert "uplink loss" in out and "SFU nacks" in out


def test_smoke_joinstorm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--scenario joinstorm at a small N: everybody joins within the window, connects and
    hears a forwarded packet; the storm's figures are in the result and the output."""
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--systems", "sealroom,reflector", "--scenario", "joinstorm",
                              "--participants", "5", "--last-n", "2", "--join-within", "0.5",
                              "--quick", "--out", str(tmp_path)])
    before = _children()
    assert cli.run(args) == 0
    assert _children() <= before

    doc = json.loads((tmp_path / "bench-joinstorm.json").read_text())
    assert doc["systems"] == ["sealroom"]  # the storm goes through sealroom's signaling
    (r,) = doc["results"]
    assert "error" not in r, r.get("error")
    assert r["missing_streams"] == 0
    storm = r["joinstorm"]
    assert (storm["participants"], storm["joined"], storm["connected"]) == (5, 5, 5)
    assert storm["failures"] == 0 and storm["errors"] == {}, storm
    timeline = storm["timeline"]
    joins = [timeline[f"p{i}"][0] for i in range(5)]
    assert joins == sorted(joins) and joins[-1] >= 0.5  # spread over the window, in order
    for joined, connected, first, offers in timeline.values():
        assert joined <= connected <= first and offers >= 1
    assert storm["all_connected_s"] == max(t[1] for t in timeline.values())
    assert 0 < storm["join_to_first_packet_p50_s"] <= storm["join_to_first_packet_p99_s"]
    assert storm["sub_offers_total"] == sum(t[3] for t in timeline.values())
    # every sub offer the generator answered is one the SFU counted (a re-offer may still
    # have been on its way when the storm's figures were taken)
    assert 5 <= storm["sub_offers_total"] <= r["server_counters"]["sub_offers"]
    assert storm["server_cpu_s"] > 0 and storm["gen_cpu_s"] > 0
    # 5 subscribers × 2 video sources × 60 pkt/s + member 0's audio to 4 others
    assert r["offered_pps"] == pytest.approx(5 * 2 * 60 + 4 * 50, rel=0.05)
    assert r["forwarded_pps"] > 0
    out = capsys.readouterr().out
    assert "joining within 0.5 s: 5/5 connected" in out and "sub offers per participant" in out


def test_smoke_simulcast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--scenario simulcast: every publisher sends three layers + audio; sealroom (by
    sfu-video-constraints) and Janus VideoRoom (by configure substream) forward each
    subscriber the layer it asked for, counted per layer; the reflector cannot select."""
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--systems", "sealroom,reflector,janus", "--scenario",
                              "simulcast", "--participants", "4", "--quick",
                              "--out", str(tmp_path)])
    before = _children()
    assert cli.run(args) == 0
    assert _children() <= before

    doc = json.loads((tmp_path / "bench-simulcast.json").read_text())
    assert doc["systems"] == ["sealroom", "janus"]  # the reflector sends every layer
    results = {r["system"]: r for r in doc["results"]}
    for r in results.values():
        assert "error" not in r, r.get("error")
        assert r["missing_streams"] == 0  # every subscriber heard the layer it asked for
        # per subscriber: 3 audio × 50 + one top (120) + one middle (60) + one lowest (30)
        # packets/s at most (a generator starved by other load sends fewer)
        assert 0 < r["offered_pps"] <= 1.05 * 4 * (3 * 50 + 120 + 60 + 30)
        layers = r["layers"]
        assert set(layers) == {"q", "h", "f"} and layers == r["windows"][0]["layers"]
        for rid, row in layers.items():
            assert row["expected"] > 0 and row["received"] >= 0.5 * row["expected"], \
                (r["system"], rid, row)
            # a layer reaching a subscriber that asked for another one: the selection failed
            assert row["wrong"] <= 0.02 * row["received"], (r["system"], rid, row)
    counters = results["sealroom"]["server_counters"]
    assert counters["video_constraints"] == 4 * 3  # one per (subscriber, publisher)
    assert counters["simulcast_ssrcs_bound"] == 4 * 3  # every layer bound by its RID
    # every slot starts on the lowest layer: the large and the medium tile switched up
    assert counters["simulcast_switches_up"] >= 4 * 2
    assert results["sealroom"]["setup"]["errors"] == {}
    # sealroom sends a report block for every layer: each stopped sending MID + RID
    assert results["sealroom"]["windows"][0]["layers_acked"] == [12, 12]
    out = capsys.readouterr().out
    assert "simulcast layers" in out and "janus N=4: q " in out
