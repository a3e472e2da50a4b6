"""bench/run.py: how windows are judged (steal, the search's verdict per step)."""

from __future__ import annotations

from typing import Any

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
