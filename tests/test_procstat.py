"""bench/procstat.py: CPU of a process tree, with real child processes that burn CPU."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from bench import procstat

# a parent that starts two busy children, then stays busy itself until its stdin closes;
# each child spins until killed
SPIN = "import time\nwhile True:\n    time.process_time()\n"
PARENT = f"""
import subprocess, sys
kids = [subprocess.Popen([sys.executable, "-c", {SPIN!r}]) for _ in range(2)]
print(" ".join(str(k.pid) for k in kids), flush=True)
sys.stdin.read()
for k in kids:
    k.kill()
    k.wait()
"""


@pytest.fixture
def tree() -> Iterator[tuple[int, list[int]]]:
    proc = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        kids = [int(x) for x in proc.stdout.readline().split()]
        yield proc.pid, kids
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_children_and_tree(tree: tuple[int, list[int]]) -> None:
    parent, kids = tree
    assert len(kids) == 2
    assert procstat.children(parent) == set(kids)
    assert procstat.tree(parent) == [parent, *sorted(kids)]
    assert procstat.children(kids[0]) == set()
    import os

    assert parent in procstat.children(os.getpid())


def test_tree_cpu_sums_descendants(tree: tuple[int, list[int]]) -> None:
    parent, kids = tree
    before = procstat.tree_cpu(parent)
    assert set(before) == {parent, *kids}
    # bounded wait until the children have burnt measurable CPU (clock ticks)
    for _ in range(100):
        time.sleep(0.05)
        after = procstat.tree_cpu(parent)
        if all(after[k] - before[k] >= 0.1 for k in kids):
            break
    else:
        pytest.fail(f"children burnt no CPU: {before} -> {after}")
    total = procstat.cpu_delta(before, after)
    per = {p: after[p] - before[p] for p in after}
    assert total == pytest.approx(sum(per.values()))
    # the parent only waits: the tree's time is the children's, not the parent's own
    assert total > procstat.cpu_seconds(parent) - before[parent] + 0.15
    assert procstat.tree_rss_bytes(parent) > procstat.rss_bytes(parent)


def test_cpu_delta_counts_new_processes_whole() -> None:
    assert procstat.cpu_delta({1: 2.0, 2: 1.0}, {1: 3.0, 2: 1.5, 3: 0.25}) == pytest.approx(1.75)
    # one that ended in between is left out
    assert procstat.cpu_delta({1: 2.0, 2: 1.0}, {1: 2.5}) == pytest.approx(0.5)


def test_cpu_steal_is_per_cpu_and_sums_to_the_machines() -> None:
    per_cpu = procstat.cpu_steal()
    assert sorted(per_cpu) == sorted(range(len(per_cpu))) and len(per_cpu) >= 1
    # /proc/stat's "cpu" line is the sum of its "cpuN" lines, tick for tick (read twice:
    # the counters may move between the two reads, never back)
    _, before, _ = procstat.machine_cpu()
    total = sum(procstat.cpu_steal().values())
    _, after, _ = procstat.machine_cpu()
    assert before - 0.01 * len(per_cpu) <= total <= after + 0.01 * len(per_cpu)


# burns 3 ms of CPU on each line read, then prints its own CPU time (CLOCK_PROCESS_CPUTIME_ID)
BURN = """
import sys, time
for _ in sys.stdin:
    start = time.process_time()
    while time.process_time() - start < 0.003:
        pass
    print(time.process_time(), flush=True)
"""


def test_cpu_seconds_resolves_less_than_a_clock_tick() -> None:
    # A 2 s smoke run of the bare reflector used ~5 ms: in clock ticks (10 ms) it read 0.
    proc = subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        seen = []
        for _ in range(3):
            proc.stdin.write("\n")
            proc.stdin.flush()
            own = float(proc.stdout.readline())
            seen.append((own, procstat.cpu_seconds(proc.pid)))
        for (own0, read0), (own1, read1) in itertools.pairwise(seen):
            # what the child counted itself, to within a millisecond (ticks read 0 or 10 ms)
            assert read1 - read0 == pytest.approx(own1 - own0, abs=0.001)
            assert read0 >= own0
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
