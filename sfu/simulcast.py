"""Simulcast in SDP: read a publisher's simulcast offer, complete aiortc's answer.

A browser that publishes simulcast (one m-line, several encodings of the same camera)
offers, in its video m-section (RFC 8853 §5.1, RFC 8851 §4)::

    a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
    a=extmap:5 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
    a=rid:q send
    a=rid:h send
    a=rid:f send
    a=simulcast:send q;h;f

aiortc 1.16 parses none of that and answers as if one encoding were offered: without the
RID extension and the recv side of those lines in the answer, Chromium rejects the answer
or sends only the first encoding. ``parse_offer`` reads what the offer says per MID and
``complete_answer`` adds the answerer's lines to aiortc's answer text (docs/SFU.md
"Simulcast"). The SFU then binds each layer's SSRC by the RID header extension its first
packets carry (RFC 8852 §3.1/§3.2), never by the first SSRC seen with the MID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SfuError

URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"  # RFC 8852 §3.1
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"  # RFC 8852 §3.2
MAX_LAYERS = 4  # simulcast streams accepted per m-line (browsers send up to 3)
# RFC 8851 §10: rid-id = 1*(alpha-numeric / "-" / "_"); 16 bytes at most here, so a RID
# always fits one one-byte header extension element (RFC 8285 §4.2)
_RID = re.compile(r"[A-Za-z0-9_-]{1,16}")
_EXTMAP = re.compile(r"a=extmap:(\d+)(?:/\S+)?\s+(\S+)")


@dataclass
class SimulcastOffer:
    """What one offered m-section says about simulcast."""

    mid: str
    rids: list[str]  # one per simulcast stream, in the offer's order: lowest quality first
    rid_id: int  # the RID header extension's id (RFC 8852 §3.1)
    repaired_id: int | None = None  # the repaired-RID extension's id (§3.2), if offered
    rid_lines: dict[str, str] = field(default_factory=dict)  # rid -> its a=rid line

    def layer_of(self, rid: bytes) -> int | None:
        """The layer index a RID extension value names, or None."""
        try:
            return self.rids.index(rid.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None


def _sections(sdp: str) -> list[list[str]]:
    """The SDP's lines, cut at each m= line (the session part is section 0)."""
    out: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if line.startswith("m="):
            out.append([])
        out[-1].append(line)
    return out


def parse_offer(sdp: str) -> dict[str, SimulcastOffer]:
    """Every video m-section of ``sdp`` that offers simulcast, by MID.

    Raises ``SfuError("bad-sdp")`` when the simulcast lines contradict each other (a
    stream without its ``a=rid ... send``, bad RID syntax, too many streams, or no RID
    header extension to tell the streams apart: RFC 8853 §5.2 needs one of RID
    extension or SSRC signalling, and the SFU uses the extension).
    """
    offers: dict[str, SimulcastOffer] = {}
    for lines in _sections(sdp)[1:]:
        if not lines[0].startswith("m=video"):
            continue
        mid = None
        rid_lines: dict[str, str] = {}
        simulcast: str | None = None
        ext: dict[str, int] = {}
        for line in lines:
            if line.startswith("a=mid:"):
                mid = line[6:].strip()
            elif line.startswith("a=rid:"):
                # RFC 8851 §10: a=rid:<rid-id> <direction> [restrictions]
                parts = line[6:].split()
                if len(parts) >= 2 and parts[1] == "send":
                    rid_lines[parts[0]] = line
            elif line.startswith("a=simulcast:"):
                # RFC 8853 §5.1: a=simulcast:send <list> [recv <list>]
                parts = line[12:].split()
                if len(parts) >= 2 and parts[0] == "send":
                    simulcast = parts[1]
            elif (m := _EXTMAP.match(line)) is not None:
                ext[m.group(2)] = int(m.group(1))
        if simulcast is None or mid is None:
            continue
        rids: list[str] = []
        for stream in simulcast.split(";"):  # RFC 8853 §5.1: ';' between streams
            # ',' separates alternative formats of one stream; '~' marks it paused
            first = stream.split(",")[0].lstrip("~")
            if not _RID.fullmatch(first) or first not in rid_lines or first in rids:
                raise SfuError("bad-sdp", f"a=simulcast names {first[:20]!r} without its "
                                          "a=rid send line")
            rids.append(first)
        if not 1 <= len(rids) <= MAX_LAYERS:
            raise SfuError("bad-sdp", f"simulcast: 1 to {MAX_LAYERS} streams per m-line")
        if URI_RID not in ext:
            raise SfuError("bad-sdp", "simulcast offered without the RID header extension "
                                      f"({URI_RID})")
        offers[mid] = SimulcastOffer(mid, rids, ext[URI_RID],
                                     ext.get(URI_REPAIRED_RID),
                                     {r: rid_lines[r] for r in rids})
    return offers


def complete_answer(answer: str, offers: dict[str, SimulcastOffer]) -> str:
    """aiortc's answer with, in each accepted m-section that was offered simulcast:

    - the RID and repaired-RID extmaps with the offer's ids (RFC 8285 §6: the answer
      echoes the ids it accepts; aiortc keeps only the URIs it knows);
    - ``a=rid:<id> recv`` per stream (RFC 8851 §4: the answerer's rid lines mirror the
      offer's with the direction reversed);
    - ``a=simulcast:recv <list>`` (RFC 8853 §5.3: the answerer reverses the direction
      and accepts each offered stream, in the offered order, by its first alternative;
      a stream the offer marked paused (``~``) is accepted unpaused).
    """
    if not offers:
        return answer
    eol = "\r\n" if "\r\n" in answer else "\n"
    sections = _sections(answer)
    for lines in sections[1:]:
        mid = next((ln[6:].strip() for ln in lines if ln.startswith("a=mid:")), None)
        offer = offers.get(mid) if mid is not None else None
        if offer is None or lines[0].split()[1:2] == ["0"]:  # not simulcast, or rejected
            continue
        have = {m.group(2) for ln in lines if (m := _EXTMAP.match(ln)) is not None}
        extmaps = []
        if URI_RID not in have:
            extmaps.append(f"a=extmap:{offer.rid_id} {URI_RID}")
        if offer.repaired_id is not None and URI_REPAIRED_RID not in have:
            extmaps.append(f"a=extmap:{offer.repaired_id} {URI_REPAIRED_RID}")
        last_ext = max((i for i, ln in enumerate(lines) if ln.startswith("a=extmap:")),
                       default=next(i for i, ln in enumerate(lines)
                                    if ln.startswith("a=mid:")))
        lines[last_ext + 1 : last_ext + 1] = extmaps
        lines[:] = [ln for ln in lines if not ln.startswith(("a=rid:", "a=simulcast:"))]
        lines.extend(f"a=rid:{rid} recv" for rid in offer.rids)
        lines.append("a=simulcast:recv " + ";".join(offer.rids))
    return eol.join(eol.join(lines) for lines in sections if lines) + eol
