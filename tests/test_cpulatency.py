"""sealroom/cpulatency.py: the PM QoS CPU latency request is made, held and withdrawn."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

from sealroom import cpulatency
from sealroom.cli import build_parser
from sealroom.cpulatency import CpuLatencyLimit


def test_the_request_is_four_binary_bytes_held_until_release(tmp_path: Path) -> None:
    path = tmp_path / "cpu_dma_latency"
    path.write_bytes(b"")
    limit = CpuLatencyLimit(0, str(path))
    assert limit.hold() and limit.held and limit.reason is None
    fd = limit._fd
    assert fd is not None
    os.fstat(fd)  # open while held
    assert limit.hold()  # a second hold neither reopens nor writes again
    assert path.read_bytes() == struct.pack("=i", 0)
    limit.release()
    assert not limit.held
    with pytest.raises(OSError):
        os.fstat(fd)  # closed: that is what withdraws the request
    limit.release()  # idempotent
    with CpuLatencyLimit(25, str(path)) as held:
        assert held.held
    assert not held.held and path.read_bytes() == struct.pack("=i", 25)


def test_no_device_is_a_reason_not_an_error(tmp_path: Path) -> None:
    limit = CpuLatencyLimit(0, str(tmp_path / "absent"))
    assert not limit.hold() and not limit.held
    assert limit.reason is not None and "absent" in limit.reason
    assert cpulatency.current(str(tmp_path / "absent")) is None
    with pytest.raises(ValueError):
        CpuLatencyLimit(-1)


def test_idle_entries_are_summed_over_cpus_by_state_name(tmp_path: Path) -> None:
    for cpu, (poll, halt) in enumerate([(5, 100), (7, 40)]):
        for i, (name, usage) in enumerate([("POLL", poll), ("haltpoll idle", halt)]):
            state = tmp_path / f"cpu{cpu}" / "cpuidle" / f"state{i}"
            state.mkdir(parents=True)
            (state / "name").write_text(name + "\n")
            (state / "usage").write_text(f"{usage}\n")
    (tmp_path / "cpufreq").mkdir()  # not a cpuN directory
    assert cpulatency.idle_entries(str(tmp_path)) == {"POLL": 12, "haltpoll idle": 140}
    assert cpulatency.idle_entries(str(tmp_path / "none")) == {}


def test_the_kernel_applies_the_limit_while_held_and_drops_it_after() -> None:
    """On the real device: the limit in force reads 0 while held and idle CPUs poll."""
    if not os.access(cpulatency.PATH, os.W_OK):
        pytest.skip(f"{cpulatency.PATH} is not writable here (needs root)")
    before = cpulatency.current()
    assert before is not None
    if before == 0:
        pytest.skip("another process already holds the limit at 0")
    entries = cpulatency.idle_entries()
    with CpuLatencyLimit(0) as limit:
        assert limit.held
        assert cpulatency.current() == 0
        time.sleep(0.3)  # this thread sleeps: its core goes idle
        during = cpulatency.idle_entries()
    assert cpulatency.current() == before
    if "POLL" in entries:  # a cpuidle driver with a polling state: it took the idle time
        assert during["POLL"] > entries["POLL"]


def test_serve_has_the_flag_and_its_environment_variable(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    assert not build_parser().parse_args(["serve"]).idle_poll
    assert build_parser().parse_args(["serve", "--idle-poll"]).idle_poll
    monkeypatch.setenv("SEALROOM_IDLE_POLL", "1")
    assert build_parser().parse_args(["serve"]).idle_poll
