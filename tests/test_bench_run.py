"""bench/run.py: how windows are judged (steal, the search's verdict per step)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import report, run


def _window(p99: float, steal: float, loss: float = 0.0) -> dict[str, Any]:
    return {"p99_ms": p99, "p99_user_ms": p99, "loss": loss, "steal_cores": steal,
            "stolen": steal > run.STEAL_MAX, "gen_saturated": False}


def test_search_step_keeps_the_first_window_without_steal() -> None:
    tries = [_window(40.0, 0.5), _window(3.0, 0.02), _window(2.0, 0.01)]
    w = run.calmest(tries)
    assert w["p99_ms"] == 3.0 and w["tries"] == 3 and w["steal_tries"] == [0.5, 0.02, 0.01]
    assert run.held(w)


def test_search_step_all_stolen_keeps_the_least_stolen_and_its_verdict() -> None:
    w = run.calmest([_window(40.0, 0.5), _window(30.0, 0.2), _window(9.0, 0.3)])
    assert w["p99_ms"] == 30.0 and w["stolen"]
    assert not run.held(w)  # a stolen window is not passed for it: its p99 stands


def test_summary_gives_the_p99_of_calm_windows_beside_the_median_of_all() -> None:
    out = run.summarize([_window(3.0, 0.0), _window(27.0, 0.4), _window(17.0, 0.3),
                         _window(4.0, 0.05)])
    assert out["p99_ms"] == 10.5  # the median of all four stays the headline figure
    assert out["calm_windows"] == 2 and out["p99_calm_ms"] == 3.5
    none_calm = run.summarize([_window(27.0, 0.4)])
    assert none_calm["calm_windows"] == 0 and none_calm["p99_calm_ms"] is None
    assert "server_stops_5ms" not in out  # a system without stop meters


def test_summary_adds_up_the_servers_stops() -> None:
    out = run.summarize([{**_window(3.0, 0.0), "server_stops_5ms": 0},
                         {**_window(14.0, 0.0), "server_stops_5ms": 4}])
    assert out["server_stops_5ms"] == 4 and out["calm_windows"] == 2


def test_pauses_are_differences_of_the_servers_stop_counters() -> None:
    c0 = {"loop_samples": 100, "loop_lag_ge_5ms": 2, "forwarded_packets": 9}
    c1 = {"loop_samples": 600, "loop_lag_ge_5ms": 3, "loop_offcpu_ge_5ms": 1,
          "worker0.loop_samples": 600, "forwarded_packets": 99}
    assert run.pauses(c0, c1) == {"loop_lag_ge_5ms": 1, "loop_offcpu_ge_5ms": 1,
                                  "loop_samples": 500}
    assert run.pauses({}, {"forwarded_packets": 1}) is None  # a system without meters


def test_a_point_whose_idle_cores_could_halt_says_so() -> None:
    polled = {"idle": {"mode": "poll", "held": True, "reason": None}}
    asked = {"idle": {"mode": "halt", "held": False, "reason": None}}
    refused = {"idle": {"mode": "poll", "held": False,
                        "reason": "/dev/cpu_dma_latency: Permission denied"}}
    assert not [n for n in report._notes(polled, md=True) if "idle" in n]
    assert "idle cores could halt" in report._notes(asked, md=True)
    assert "idle cores could halt (/dev/cpu_dma_latency: Permission denied)" in \
        report._notes(refused, md=True)
    assert run.Options().idle == "poll"


def test_tail_gives_the_quantiles_and_the_share_later_than_5_ms() -> None:
    fine = run.HIST_FINE  # 1 µs buckets below it; bucket fine + k holds k..k+1 ms
    hist = {100: 800, 2000: 180, 4999: 10, fine + 5: 9, fine + 12: 1}
    t = run.tail(hist)
    assert t == {"p90_ms": 2.0, "p95_ms": 2.0, "p999_ms": 6.0, "over_5ms": 10 / 1000}
    assert run.percentile(hist, 0.99) == 4.999
    assert run.tail({}) == {"p90_ms": None, "p95_ms": None, "p999_ms": None,
                            "over_5ms": None}


def _uplink_merged() -> tuple[Any, dict[str, Any]]:
    """A 3-person meeting's merged window: stream 3 (member 1's video) withheld 4 packets;
    receiver 0 got 4 of them back, receiver 2 got 3, one of them twice, and a stray."""
    from bench.scenarios import build

    s = build("meeting", 3)
    shadow = 3 + s.withheld_base
    m = {"sent": {0: 50, 1: 56, 2: 50, 3: 56, 4: 50, 5: 60}, "withheld": {1: 4, 3: 4},
         "nacked": {3: 4}, "resent": {3: 5},
         "pairs": {(0 << 16) | 3: 56, (2 << 16) | 3: 56, (0 << 16) | shadow: 4,
                   (2 << 16) | shadow: 5, (1 << 16) | shadow: 1}}
    return s, m


def test_uplink_window_counts_what_the_receivers_got_back() -> None:
    s, m = _uplink_merged()
    reports = [{"uplink": {"nacks": 3, "nacked": 4, "nack_misses": 0, "rtx_streams": 3}}]
    c0 = {"upstream_nacks_sent": 10, "rtx_received": 20}
    c1 = {"upstream_nacks_sent": 13, "upstream_nacked": 4, "rtx_received": 25}
    up = run.uplink_window(m, s, reports, c0, c1)
    # 8 withheld, each for 2 receivers; stream 1's (member 0's video) never came back
    assert (up["withheld"], up["expected"], up["video_packets"]) == (8, 16, 180)
    # receiver 0: 4 of 4; receiver 2: 5 copies of at most 4; receiver 1 sent stream 3
    assert (up["recovered"], up["unrecovered"], up["duplicates"]) == (8, 8, 2)
    assert up["recovered_share"] == 0.5
    assert (up["nacked"], up["resent"]) == (4, 5)
    assert up["generator"] == {"nacks": 3, "nacked": 4, "nack_misses": 0, "rtx_streams": 3}
    assert up["server"] == {"upstream_nacks_sent": 3, "upstream_nacked": 4,
                            "upstream_recovered": 0, "upstream_late": 0,
                            "upstream_unrepaired": 0, "rtx_received": 5}
    assert run.uplink_window(m, s, reports, {}, {"forwarded_packets": 1})["server"] is None

    total = run.uplink_summary([up, up])
    assert (total["withheld"], total["recovered"], total["expected"]) == (16, 16, 32)
    assert total["withheld_share"] == 16 / 360 and total["recovered_share"] == 0.5
    assert total["server"]["rtx_received"] == 10
    assert total["generator"] == up["generator"]  # cumulative already: the last one


def test_report_shows_uplink_loss() -> None:
    s, m = _uplink_merged()
    up = run.uplink_summary([run.uplink_window(m, s, [{"uplink": {"nacks": 1,
                                                                  "rtx_streams": 3}}],
                                               {}, {"upstream_recovered": 7})])
    r = {"system": "sealroom", "participants": 3, "uplink_loss": 0.03, "uplink": up,
         "residual_loss": 0.0123}
    assert report.stem("meeting", 1, [0], 0.03) == "bench-meeting-loss3"
    assert report.stem("meeting", 1, [0]) == "bench-meeting"
    assert "uplink loss 3 %: 8 withheld, 50.0 % repaired (p50/p99 include repairs)" in \
        report._notes(r, md=True)
    (row,) = report.uplink_rows([r, {"system": "janus", "participants": 3}])
    assert row[:3] == ("sealroom", "3", "3") and row[11:14] == ("1.23", "rtx", "0")
    assert row[15] == "7"  # the SFU's upstream_recovered
    text = report.uplink_text([r])
    assert "SFU recov" in text and "sealroom" in text
    md = report.markdown({"results": [r]})
    assert "| sealroom | 3 | 3 | 180 | 8 | 4 | 5 | 8 | 8 | 2 | 50.0 | 1.23 | rtx |" in md
    assert report.uplink_text([{"system": "x", "participants": 2}]) == ""


def test_mesh_of_a_simulcast_camera_sends_each_peer_its_top_layer() -> None:
    """A mesh peer gets one encoding (the top layer, + audio); the SFU gets all three."""
    from bench.scenarios import build

    one = build("simulcast", 2).members[0]
    audio, q, h, f = (spec for _, spec in one.streams())
    (row,) = report.mesh("simulcast", [5])
    assert row["sfu_upload_bps"] == pytest.approx(report._wire_bps([audio, q, h, f]))
    assert row["mesh_upload_bps"] == pytest.approx(4 * report._wire_bps([audio, f]))
    # the meeting's figures are what they were: one copy of everything per receiver
    (meeting,) = report.mesh("meeting", [5])
    assert meeting["mesh_upload_bps"] == pytest.approx(4 * meeting["sfu_upload_bps"])
    assert report.mesh_limit("simulcast") == int(10e6 // report._wire_bps([audio, f])) + 1


def test_layers_window_counts_each_layer_by_who_asked_for_it() -> None:
    """simulcast: a layer's packets count as received only at the subscribers that asked
    for that layer; anywhere else they are "wrong" (the SFU selected badly)."""
    from bench.scenarios import build

    s = build("simulcast", 4)
    q0, h0, f0 = 1, 2, 3  # member 0's layer stream ids
    assert (s.receivers(q0), s.receivers(h0), s.receivers(f0)) == ([1], [2], [3])
    m = {"sent": {0: 10, q0: 30, h0: 60, f0: 120},
         "pairs": {(1 << 16) | q0: 30, (2 << 16) | h0: 58, (3 << 16) | f0: 120,
                   (1 << 16) | f0: 5,  # receiver 1 asked for member 0's lowest layer
                   (1 << 16) | 0: 10, (1 << 16) | (s.withheld_base + q0): 3}}
    assert run.layers_window(m, s) == {"q": {"expected": 30, "received": 30, "wrong": 0},
                                       "h": {"expected": 60, "received": 58, "wrong": 0},
                                       "f": {"expected": 120, "received": 120, "wrong": 5}}
    assert run.layers_window({"sent": {0: 10, 1: 60}, "pairs": {}}, build("meeting", 3)) is None
    text = report.layers_text([{"system": "janus", "participants": 4,
                                "layers": run.layers_window(m, s)}])
    assert "janus N=4: q 30/30 (100.00 %), wrong 0; h 58/60 (96.67 %), wrong 0; " \
        "f 120/120 (100.00 %), wrong 5" in text
    assert report.layers_text([{"system": "sealroom", "participants": 4}]) == ""
