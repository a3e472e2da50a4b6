"""sfu.vp8: RFC 7741 descriptor and key-frame detection, on clear-header (E2EE) frames."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from peers.mediabot import vp8_frame
from sfu.vp8 import (
    Vp8Descriptor,
    build_descriptor,
    frame_size,
    is_keyframe,
    rewrite_descriptor,
)


def test_descriptor_fields() -> None:
    d = Vp8Descriptor.parse(build_descriptor(start=True, picture_id=0x1234) + b"x")
    assert (d.start_of_partition, d.partition_id, d.picture_id, d.size) == (True, 0, 0x1234, 4)
    d = Vp8Descriptor.parse(bytes([0x90, 0x80, 0x05]))  # 7-bit picture id
    assert (d.picture_id, d.size) == (5, 3)
    d = Vp8Descriptor.parse(bytes([0x90, 0xF0, 0x81, 0x02, 0x03, 0x04]))  # I, L, T/K
    assert (d.picture_id, d.size) == (0x102, 6)
    assert Vp8Descriptor.parse(b"\x10").size == 1  # no extension octet


def test_key_frames_detected_from_the_clear_header() -> None:
    key = vp8_frame(True, 100)  # 10 clear bytes + opaque "ciphertext"
    delta = vp8_frame(False, 100)
    assert key[3:6] == b"\x9d\x01\x2a" and key[0] & 1 == 0 and delta[0] & 1 == 1
    assert is_keyframe(build_descriptor(start=True, picture_id=1) + key)
    assert not is_keyframe(build_descriptor(start=True, picture_id=1) + delta)
    # not the first packet of the frame, or not partition 0: never a key-frame start
    assert not is_keyframe(build_descriptor(start=False, picture_id=1) + key)
    assert not is_keyframe(bytes([0x11]) + key)
    # P=0 without the start code is not trusted
    assert not is_keyframe(bytes([0x10]) + key[:3] + b"\x00\x00\x00" + key[6:])


def test_truncated_input() -> None:
    for data in (b"", b"\x80", b"\x80\x80", b"\x80\x80\x80", b"\x90\x80\x80\x00", b"\x10\x00"):
        assert not is_keyframe(data)


@given(st.binary(max_size=40))
def test_never_raises(data: bytes) -> None:
    is_keyframe(data)
    try:
        d = Vp8Descriptor.parse(data)
    except ValueError:
        return
    assert 1 <= d.size <= len(data)


@given(st.booleans(), st.integers(0, 7), st.booleans(), st.booleans(), st.booleans(),
       st.booleans(), st.integers(0, 0x7FFF), st.integers(0, 12))
def test_descriptors_cut_anywhere(start: bool, pid: int, i: bool, m: bool, tl0: bool,
                                  tk: bool, picture_id: int, cut: int) -> None:
    """RFC 7741 §4.2 descriptors with every optional field, cut at every length: either
    refused or read exactly (never past the data)."""
    x = (0x80 if i else 0) | (0x40 if tl0 else 0) | (0x30 if tk else 0)
    desc = bytes([0x80 | (0x10 if start else 0) | pid, x])
    if i:
        desc += bytes([0x80 | picture_id >> 8, picture_id & 0xFF]) if m else \
            bytes([picture_id & 0x7F])
    desc += b"\x05" * tl0 + b"\x20" * tk
    data = desc[:cut]
    try:
        d = Vp8Descriptor.parse(data)
    except ValueError:
        assert cut < len(desc)
        return
    assert d.size == len(desc) <= len(data)
    assert d.start_of_partition == start and d.partition_id == pid
    if i:
        assert d.picture_id == (picture_id if m else picture_id & 0x7F)
    assert not is_keyframe(data)  # no VP8 payload header after it


def test_temporal_fields_parsed() -> None:
    d = Vp8Descriptor.parse(build_descriptor(start=True, picture_id=7, tl0_pic_idx=200, tid=2))
    assert (d.picture_id, d.tl0_pic_idx, d.tid, d.size) == (7, 200, 2, 6)
    d = Vp8Descriptor.parse(build_descriptor(start=True, picture_id=7, tl0_pic_idx=1, tid=0))
    assert (d.tl0_pic_idx, d.tid) == (1, 0)
    d = Vp8Descriptor.parse(bytes([0x90, 0x10, 0xC0]))  # K only: no TID
    assert (d.picture_id, d.tl0_pic_idx, d.tid, d.size) == (None, None, None, 3)


def test_descriptor_rewrite() -> None:
    """RFC 7741 §4.2 fields moved modulo their width; all other bytes kept."""
    frame = vp8_frame(True, 20)
    p = build_descriptor(start=True, picture_id=0x7FFE, tl0_pic_idx=255, tid=0) + frame
    out = rewrite_descriptor(p, 3, 2)
    d = Vp8Descriptor.parse(out)
    assert (d.picture_id, d.tl0_pic_idx, d.tid) == (1, 1, 0)
    assert out[d.size :] == frame and out[0] == p[0] and out[1] == p[1] and out[5] == p[5]
    seven = bytes([0x90, 0xC0, 0x7F, 0x10]) + frame  # 7-bit PictureID wraps at 128
    d = Vp8Descriptor.parse(rewrite_descriptor(seven, 0x7F01, 0))
    assert (d.picture_id, d.tl0_pic_idx) == (0, 0x10)
    for untouched in (b"", b"\x10" + frame, bytes([0x90, 0x80, 0x80])):
        assert rewrite_descriptor(untouched, 5, 5) == untouched


def test_frame_size_from_the_clear_key_frame_header() -> None:
    d = build_descriptor(start=True, picture_id=1)
    assert frame_size(d + vp8_frame(True, 50, 1280, 720)) == (1280, 720)
    assert frame_size(d + vp8_frame(False, 50)) is None
    assert frame_size(d + vp8_frame(True, 50)[:9]) is None  # truncated
