"""sfu/transportcc.py: the sub offer's transport-cc lines, finding the element, stamping."""

from __future__ import annotations

import socket
import struct

import pytest
from aiortc import RTCPeerConnection
from aiortc.sdp import SessionDescription
from pylibsrtp import Policy, Session

from sfu._fanout import Batch, Lane, Sender, fanout
from sfu.rtcp import URI_TWCC
from sfu.rtp import build_extensions, build_packet
from sfu.srtp import Protector
from sfu.transportcc import EXT_ID, PLACEHOLDER, TransportCc, answered_id, element_offset, offer

KEY = bytes(range(30))  # AES_CM_128_HMAC_SHA1_80: 16-byte key + 14-byte salt


async def aiortc_offer() -> str:
    """A sub offer as aiortc writes it: one audio and one video sendonly m-line."""
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio", direction="sendonly")
        pc.addTransceiver("video", direction="sendonly")
        return (await pc.createOffer()).sdp
    finally:
        await pc.close()


async def test_offer_adds_the_extension_and_feedback_to_every_m_line() -> None:
    sdp = offer(await aiortc_offer())
    parsed = SessionDescription.parse(sdp)
    assert [m.kind for m in parsed.media] == ["audio", "video"]
    for media in parsed.media:
        assert any(e.uri == URI_TWCC and e.id == EXT_ID for e in media.rtp.headerExtensions)
        for codec in media.rtp.codecs:
            # RFC 4585 §4.2 per payload type, as Chromium reads it
            assert any(fb.type == "transport-cc" for fb in codec.rtcpFeedback), codec
    # the other extensions keep their ids, and no id is used twice in one m-line
    for media in parsed.media:
        ids = [e.id for e in media.rtp.headerExtensions]
        assert len(ids) == len(set(ids)), ids
    assert offer(sdp) == sdp  # idempotent: a section that has it is left alone


def test_offer_leaves_other_sections_alone() -> None:
    sdp = "v=0\r\ns=-\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n"
    assert offer(sdp) == sdp


def test_answered_id() -> None:
    assert answered_id(f"m=video 9 x 96\r\na=extmap:7 {URI_TWCC}\r\n") == 7
    assert answered_id("m=video 9 x 96\r\na=extmap:3 http://www.webrtc.org/x\r\n") is None


def packet(elements: list[tuple[int, bytes]], csrcs: bytes = b"") -> bytes:
    return build_packet(payload_type=96, sequence_number=1, timestamp=2, ssrc=3,
                        marker=False, extensions=build_extensions(elements),
                        payload=b"payload", csrcs=csrcs)


@pytest.mark.parametrize("elements", [
    [(1, b"0"), (3, b"\x01\x02\x03"), (EXT_ID, PLACEHOLDER)],  # one-byte form (§4.2)
    [(EXT_ID, PLACEHOLDER)],
    [(1, b"x" * 17), (EXT_ID, PLACEHOLDER)],  # a long MID: the two-byte form (§4.3)
])
def test_element_offset_finds_the_value(elements: list[tuple[int, bytes]]) -> None:
    for csrcs in (b"", struct.pack("!II", 7, 8)):
        data = packet(elements, csrcs)
        at = element_offset(data, EXT_ID)
        assert at > 0 and data[at : at + 2] == PLACEHOLDER
        assert data[at + 2 :].endswith(b"payload")


def test_element_offset_without_the_element() -> None:
    assert element_offset(packet([(1, b"0")]), EXT_ID) == -1
    assert element_offset(packet([]), EXT_ID) == -1
    assert element_offset(packet([(EXT_ID, b"\x01")]), EXT_ID) == -1  # wrong length
    data = packet([(EXT_ID, PLACEHOLDER)])
    for cut in range(len(data)):  # truncated: never an offset past the end
        at = element_offset(data[:cut], EXT_ID)
        assert at == -1 or at + 2 <= cut


def test_stamp_numbers_every_packet_in_order_and_logs_it() -> None:
    sender = Sender()
    cc = TransportCc(EXT_ID, sender)
    assert sender.twcc_id == EXT_ID
    data = packet([(1, b"0"), (EXT_ID, PLACEHOLDER)])
    at = element_offset(data, EXT_ID)
    stamped = [cc.stamp(data) for _ in range(3)]
    assert [struct.unpack_from("!H", p, at)[0] for p in stamped] == [0, 1, 2]
    assert all(len(p) == len(data) and p[:at] == data[:at] for p in stamped)
    # a packet without the element goes out as it came, unnumbered
    bare = packet([(1, b"0")])
    assert cc.stamp(bare) is bare
    # each number's size on the wire and send time wait for the next feedback
    log = sender.twcc_drain()
    assert [(seq, size) for seq, size, _ in log] == [(i, len(data) + 38) for i in range(3)]
    sender.twcc_next(100, 1.0)
    # the estimator learns of them before the feedback that reports them: all arrived
    cc.on_feedback([(seq, 1000 * seq) for seq in range(4)], 2.0)
    assert cc.estimator.loss == 0.0 and not sender.twcc_drain()
    # sequence numbers wrap (16 bits)
    for _ in range(0xFFFF - 4):  # 4 … 65534
        sender.twcc_next(100, 1.0)
    assert sender.twcc_next(100, 1.0) == 0xFFFF and sender.twcc_next(100, 1.0) == 0


def test_the_one_byte_form_only() -> None:
    with pytest.raises(ValueError):
        TransportCc(15, Sender())


@pytest.mark.parametrize("batched", [False, True], ids=["sendto", "batched"])
def test_the_compiled_path_numbers_what_it_sends(batched: bool) -> None:
    """fanout() adds the element to each packet and numbers it from the Sender's
    sequence, the same one ``TransportCc.stamp`` takes numbers from."""
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    into = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    into.bind(("127.0.0.1", 0))
    into.settimeout(2.0)
    try:
        session = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        sender, pair = Sender(), object()
        native = Protector(session).native()
        assert native is not None
        host, port = into.getsockname()
        sender.point(native[0], native[1], session, {1: pair}, pair, out.fileno(), host, port)
        cc = TransportCc(EXT_ID, sender)
        lane = Lane(sender)
        lane.pt, lane.ssrc, lane.started = 100, 1, True
        lane.set_ext(b"\x40" + b"0", b"", b"", True)  # MID "0" in id 4
        lane.last_in_seq = lane.resume_seq = 4
        # the Python path's block has the element too, its value left for RawPeer.stamp
        block = lane.extensions(None, None)
        assert block is not None
        assert block[4:].startswith(b"\x400" + bytes([EXT_ID << 4 | 1, 0, 0]))  # MID, it
        assert cc.stamp(b"\x80" * 12) == b"\x80" * 12  # (no extension: left alone)
        tapped: list[bytes] = []
        sender.tap = tapped.append
        batch = Batch() if batched else None
        for seq in (5, 6, 7):
            data = build_packet(payload_type=96, sequence_number=seq, timestamp=1, ssrc=2,
                                marker=False, extensions=b"", payload=b"x" * 10)
            assert fanout([lane], data, 12, len(data), None, None, 9.0 + seq, batch)[0] == 1
        if batch is not None:
            batch.flush()
        rx = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
        assert tapped == [rx.unprotect(into.recv(2048)) for _ in range(3)]
        numbers = [struct.unpack_from("!H", p, element_offset(p, EXT_ID))[0] for p in tapped]
        assert numbers == [0, 1, 2]
        assert sender.twcc_drain() == [(i, len(tapped[i]) + 38, 14.0 + i) for i in range(3)]
        # the Python path continues the same sequence
        assert sender.twcc_next(100, 20.0) == 3
    finally:
        out.close()
        into.close()



class Rates:
    """Stands in for the estimator: reports the acked rates it is given."""

    def __init__(self) -> None:
        self.acked_rate: int | None = None
        self.estimate = 1

    def on_sent(self, seq: int, size: int, now: float) -> None: ...

    def on_feedback(self, arrivals: list[tuple[int, int | None]], now: float) -> None: ...


def test_delivered_is_a_rate_held_for_a_second() -> None:
    cc = TransportCc(EXT_ID, Sender())
    rates = Rates()
    cc.estimator = rates  # type: ignore[assignment]
    assert cc.delivered(0.0) is None
    for i, rate in enumerate([1_000_000, 1_800_000, 1_200_000, 1_500_000, 1_400_000]):
        rates.acked_rate = rate
        cc.on_feedback([], 10.0 + 0.25 * i)
    # 10.0 … 11.0: the burst's 1.8 Mbit/s did not hold; the least of the second did
    assert cc.delivered(11.0) == 1_000_000
    rates.acked_rate = 1_600_000
    cc.on_feedback([], 11.1)  # the 1.0 Mbit/s report is over a second old now
    assert cc.delivered(11.1) == 1_200_000
    assert cc.delivered(13.0) is None  # nothing reported in the last second
