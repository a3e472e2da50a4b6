"""sfu.track: what bench.fuzz found there (docs/BENCHMARKS.md "Hostile media traffic")."""

from __future__ import annotations

from sfu import rtcp
from sfu.rtp import URI_AUDIO_LEVEL, URI_MID, RtpHeader, build_packet
from sfu.stats import Stats
from sfu.track import NACK_CHUNK, PublishedTrack
from tests.test_fanout import PUB_SSRC, make_track


class RtcpOwner:
    """A participant that records the RTCP sent to its publisher."""

    def __init__(self) -> None:
        self.pid = "p"
        self.rtcp_ssrc = 1
        self.rtcp: list[bytes] = []

    def send_rtcp(self, data: bytes) -> bool:
        self.rtcp.append(data)
        return True


def test_nacks_to_a_publisher_fit_one_datagram_each() -> None:
    owner = RtcpOwner()
    track = PublishedTrack(owner, "video", "0", Stats(), 512, 1.0)  # type: ignore[arg-type]
    track.ssrc = PUB_SSRC
    wanted = list(range(0, 1400, 2))  # 700 holes, every other packet: no BLP sharing
    track._send_nack(wanted)
    assert len(owner.rtcp) == -(-len(wanted) // NACK_CHUNK) == 3
    asked: list[int] = []
    for data in owner.rtcp:
        assert len(data) <= 12 + 4 * NACK_CHUNK  # header + sender/media SSRC + FCI
        (nack,) = rtcp.parse_compound(data)
        assert isinstance(nack, rtcp.Nack) and nack.media_ssrc == PUB_SSRC
        asked += nack.lost
    assert asked == wanted
    assert track.stats.snapshot()["upstream_nacks_sent"] == 3


def test_an_audio_level_that_is_not_one_octet_is_not_forwarded() -> None:
    """RFC 6464 §3: one octet. A 4-byte "level" (two-byte form, RFC 8285 §4.3) from a
    publisher reaches no subscriber; the packet does, counted."""
    ext_ids = {URI_MID: 1, URI_AUDIO_LEVEL: 2}
    track, (slot,), stats = make_track("audio", 1, None, ("127.0.0.1", 9), ext_ids)
    peer = slot.owner.sub
    for i, level in enumerate((b"\x01\x02\x03\x04", b"\x9e")):
        body = bytes([2, len(level)]) + level  # id 2 = the publisher's level id
        body += b"\x00" * (-len(body) % 4)
        ext = b"\x10\x00" + (len(body) // 4).to_bytes(2, "big") + body
        data = build_packet(payload_type=96, sequence_number=100 + i, timestamp=960 * i,
                            ssrc=PUB_SSRC, marker=False, extensions=ext, payload=b"opus")
        track.on_rtp(RtpHeader.parse(data), data)
    sent = [RtpHeader.parse(p) for p in peer.sent]  # type: ignore[attr-defined]
    assert len(sent) == 2
    assert 2 not in sent[0].extensions  # the subscriber's level id: nothing forwarded
    assert sent[1].extensions.get(2) == b"\x9e"  # a good level is
    assert stats.snapshot()["bad_audio_level"] == 1
