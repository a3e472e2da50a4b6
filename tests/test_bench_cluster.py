"""bench/cluster.py end to end, small: a real redis-server and real `sealroom serve --redis`
processes; every measure has its samples and the placement covers every room."""

from __future__ import annotations

from pathlib import Path

from bench.cluster import Results, quantile, run, summary


async def test_the_cluster_bench_measures_placement_joins_and_the_relay(tmp_path: Path) -> None:
    res: Results = await run(2, 4, 1, 16, tmp_path)
    assert sum(res.placement.values()) == 4 and set(res.placement) == {"node0", "node1"}
    assert res.placement == {"node0": 2, "node1": 2}  # placed one after another: spread
    for name in ("join_single_ms", "join_direct_ms", "join_bridged_ms"):
        assert len(getattr(res, name)) == 4, name
    for name in ("ping_single_ms", "ping_direct_ms", "ping_bridged_ms"):
        values = getattr(res, name)
        assert len(values) >= 8 and all(v > 0 for v in values), name
    text = summary(res)
    assert "placement of 4 rooms on 2 nodes: node0 2, node1 2" in text
    assert "the relay adds" in text


def test_quantile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert quantile(values, 0.5) == 50.0 and quantile(values, 0.99) == 99.0
    assert quantile([3.0], 0.99) == 3.0
