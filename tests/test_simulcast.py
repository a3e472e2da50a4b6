"""sfu.simulcast: reading a simulcast offer (RFC 8853, RFC 8851), completing the answer."""

from __future__ import annotations

import pytest

from sfu.errors import SfuError
from sfu.simulcast import URI_REPAIRED_RID, URI_RID, complete_answer, parse_offer

# The shape of Chromium 156's simulcast offer (video section trimmed of codecs we ignore):
# no a=ssrc lines, the RID extensions, three rids and the simulcast list.
OFFER = "\r\n".join([
    "v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0",
    "a=group:BUNDLE 0 1", "a=msid-semantic: WMS",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=mid:0", "a=sendonly",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid", "a=rtpmap:111 opus/48000/2",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "c=IN IP4 0.0.0.0", "a=mid:1",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    f"a=extmap:10 {URI_RID}", f"a=extmap:11 {URI_REPAIRED_RID}",
    "a=sendonly", "a=msid:- 1b0c", "a=rtcp-mux",
    "a=rtpmap:96 VP8/90000", "a=rtcp-fb:96 nack", "a=rtcp-fb:96 nack pli",
    "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96",
    "a=rid:q send", "a=rid:h send", "a=rid:f send", "a=simulcast:send q;h;f", "",
])

# aiortc 1.16's answer to it: only the extensions it knows, nothing about simulcast
ANSWER = "\r\n".join([
    "v=0", "o=- 3911 0 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=recvonly", "a=mid:0",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid", "a=rtpmap:111 opus/48000/2",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "c=IN IP4 0.0.0.0", "a=recvonly", "a=mid:1",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=rtcp-mux", "a=rtpmap:96 VP8/90000", "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96",
    "a=setup:active", "",
])


def section(sdp: str, mid: str) -> list[str]:
    lines = [line for line in sdp.split("\r\n") if line]
    start = lines.index(f"a=mid:{mid}")
    while not lines[start].startswith("m="):
        start -= 1
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("m=")),
               len(lines))
    return lines[start:end]


def test_offer_read_per_mid() -> None:
    offers = parse_offer(OFFER)
    assert list(offers) == ["1"]
    o = offers["1"]
    assert (o.rids, o.rid_id, o.repaired_id) == (["q", "h", "f"], 10, 11)
    assert [o.layer_of(r) for r in (b"q", b"h", b"f", b"x", b"\xff")] == [0, 1, 2, None, None]


def test_answer_completed() -> None:
    answer = complete_answer(ANSWER, parse_offer(OFFER))
    video = section(answer, "1")
    # the offer's ids, next to the other extmaps (RFC 8285 §6)
    assert f"a=extmap:10 {URI_RID}" in video and f"a=extmap:11 {URI_REPAIRED_RID}" in video
    assert video.index(f"a=extmap:10 {URI_RID}") == \
        video.index("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid") + 1
    # RFC 8851 §4 / RFC 8853 §5.3: the answerer's side, direction reversed
    assert video[-4:] == ["a=rid:q recv", "a=rid:h recv", "a=rid:f recv",
                          "a=simulcast:recv q;h;f"]
    assert section(answer, "0") == section(ANSWER, "0")  # audio untouched
    assert answer.endswith("\r\n") and "\r\n\r\n" not in answer
    # applying it twice changes nothing more (re-offers)
    assert complete_answer(answer, parse_offer(OFFER)) == answer
    # no simulcast offered: aiortc's answer as it is
    assert complete_answer(ANSWER, {}) == ANSWER


def test_rejected_section_left_alone() -> None:
    rejected = ANSWER.replace("m=video 9 ", "m=video 0 ")
    assert complete_answer(rejected, parse_offer(OFFER)) == rejected


def test_without_repaired_rid_only_the_rid_extmap() -> None:
    offer = OFFER.replace(f"a=extmap:11 {URI_REPAIRED_RID}\r\n", "")
    video = section(complete_answer(ANSWER, parse_offer(offer)), "1")
    assert f"a=extmap:10 {URI_RID}" in video
    assert not any(URI_REPAIRED_RID in line for line in video)


def test_alternatives_and_paused_streams() -> None:
    # RFC 8853 §5.1: ',' alternatives of one stream (the first is taken), '~' paused
    offer = OFFER.replace("a=simulcast:send q;h;f", "a=simulcast:send ~q;h,x;f") \
        .replace("a=rid:f send", "a=rid:f send\r\na=rid:x send")
    assert parse_offer(offer)["1"].rids == ["q", "h", "f"]
    video = section(complete_answer(ANSWER, parse_offer(offer)), "1")
    assert video[-1] == "a=simulcast:recv q;h;f"


def test_not_simulcast() -> None:
    plain = "\r\n".join(line for line in OFFER.split("\r\n")
                        if not line.startswith(("a=rid:", "a=simulcast:")))
    assert parse_offer(plain) == {}
    # recv-only simulcast lines (an answer's) or rid recv lines are not an offer of ours
    assert parse_offer(OFFER.replace("a=simulcast:send", "a=simulcast:recv")) == {}


@pytest.mark.parametrize(("old", "new", "why"), [
    (f"a=extmap:10 {URI_RID}\r\n", "", "RID header extension"),
    ("a=rid:h send\r\n", "", "without its a=rid"),
    ("a=rid:h send", "a=rid:h recv", "without its a=rid"),
    ("a=simulcast:send q;h;f", "a=simulcast:send q;h;f;q", "without its a=rid"),
    ("a=simulcast:send q;h;f", "a=simulcast:send q;h;f;a;b",
     "1 to 4 streams"),
    ("a=rid:q send", "a=rid:q!x send", "without its a=rid"),
    ("a=simulcast:send q;h;f", "a=simulcast:send q;h;" + "f" * 17, "without its a=rid"),
])
def test_contradictory_offers_refused(old: str, new: str, why: str) -> None:
    offer = OFFER.replace(old, new)
    if "a;b" in new:
        offer = offer.replace("a=rid:f send", "a=rid:f send\r\na=rid:a send\r\na=rid:b send")
    with pytest.raises(SfuError) as info:
        parse_offer(offer)
    assert info.value.id == "bad-sdp" and why in info.value.message
