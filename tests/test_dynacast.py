"""sfu/dynacast.py: which simulcast layers a publisher is told to send."""

from __future__ import annotations

from dataclasses import dataclass

from sfu.dynacast import Dynacast, needed, wanted


@dataclass
class L:
    index: int
    height: int


@dataclass
class S:
    lastn_ok: bool = True
    max_height: int | None = None
    source: L | None = None
    target: L | None = None


LAYERS = [L(0, 180), L(1, 360), L(2, 720)]


def test_wanted_is_the_highest_layer_the_tile_fits() -> None:
    assert wanted(LAYERS, None) == 2
    assert wanted(LAYERS, 720) == 2
    assert wanted(LAYERS, 719) == 1
    assert wanted(LAYERS, 360) == 1
    assert wanted(LAYERS, 200) == 0
    assert wanted(LAYERS, 0) == 0  # a hidden tile: the lowest
    # a layer not seen yet (height 0) may fit: it is wanted
    assert wanted([L(0, 180), L(1, 0), L(2, 720)], 200) == 1


def test_needed_by_tile_size_by_forwarding_and_never_by_last_n() -> None:
    assert needed(LAYERS, []) == [True, False, False]  # the lowest always
    assert needed(LAYERS, [S(max_height=100)]) == [True, False, False]
    assert needed(LAYERS, [S(max_height=100), S(max_height=400)]) == [True, True, False]
    # every layer below a needed one: a viewer the budget keeps below its tile's layer
    # steps to the next one down, not to the lowest
    assert needed(LAYERS, [S(max_height=100), S()]) == [True, True, True]
    # a slot still forwarding the top layer (its switch down waits for a key frame)
    assert needed(LAYERS, [S(max_height=100, source=LAYERS[2], target=LAYERS[0])]) == \
        [True, True, True]
    # a slot waiting to switch up to the middle layer
    assert needed(LAYERS, [S(max_height=100, source=LAYERS[0], target=LAYERS[1])]) == \
        [True, True, False]
    # last-N keeps this subscriber from the video: its tile size does not count
    assert needed(LAYERS, [S(lastn_ok=False)]) == [True, False, False]


def test_pause_after_the_delay_resume_at_once() -> None:
    d = Dynacast(["q", "h", "f"], pause_delay=5.0)
    assert d.update([True, True, True], 0.0) is None  # all active already: nothing to say
    assert d.update([True, False, False], 1.0) is None  # unneeded from now on
    assert d.update([True, False, False], 5.9) is None
    assert d.update([True, True, False], 6.0) == {"q": True, "h": True, "f": False}
    assert d.active == [True, True, False]
    # needed again: at once
    assert d.update([True, True, True], 6.5) == {"q": True, "h": True, "f": True}
    # a layer unneeded for a moment only is not paused
    assert d.update([True, True, False], 7.0) is None
    assert d.update([True, True, True], 11.0) is None
    assert d.update([True, True, False], 12.0) is None
    assert d.update([True, True, False], 16.9) is None
    assert d.update([True, True, False], 17.0) == {"q": True, "h": True, "f": False}
