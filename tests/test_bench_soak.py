"""bench.soak at a tiny size: 10 sockets in 3 rooms, media in one, 20 s, against a real
``sealroom serve`` process (the full soak, ``python -m bench.soak``, is not part of the
test run: docs/BENCHMARKS.md "Soak")."""

from __future__ import annotations

import pytest

from bench.soak import Options, Soak, room_address, slope_per_minute

pytestmark = pytest.mark.media


async def test_a_small_soak_holds_its_sockets_and_media() -> None:
    opts = Options(sockets=10, rooms=3, media_rooms=1, publishers=2, seconds=20.0,
                   interval=2.0, warmup=6.0, chat_interval=3.0, fps=10)
    report = await Soak(opts).run()

    assert report["joined"] == 10 and report["join_failures"] == []
    # every socket is still open at the end, the server logged no error and exited cleanly
    assert report["sockets_open_end"] == 10
    assert report["errors"] == []
    assert report["server_exit_code"] == 0
    # sampled throughout, from /proc: RSS and descriptors of a live process
    samples = report["samples"]
    assert len(samples) >= 8
    assert all(s["rss_mb"] > 10 and s["fds"] > 10 for s in samples)
    assert report["warm_at_s"] >= opts.warmup and report["end_at_s"] >= 18
    assert {"rss_growth_mb", "rss_slope_mb_per_min", "fds_growth"} <= set(report)
    # the media room's call kept forwarding to the end, and the sealed chat was relayed
    assert report["media_intervals_without_packets"] == 0
    assert report["media_packets_last_interval"] > 0
    metrics = report["metrics"]
    assert metrics["sealroom_sfu_transport_failures_total"] == 0
    assert metrics["sealroom_sealed_relayed_total"] >= 3 * 3  # 3 rooms, every 3 s
    assert metrics["sealroom_joins_total"] == 10


def test_helpers() -> None:
    assert room_address(0) == "127.0.1.1" and room_address(251) == "127.0.2.2"
    assert slope_per_minute([(0.0, 1.0), (60.0, 3.0), (120.0, 5.0)]) == pytest.approx(2.0)
    assert slope_per_minute([(0.0, 1.0)]) is None
