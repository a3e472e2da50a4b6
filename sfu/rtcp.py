"""RTCP packets the SFU reads and writes (RFC 3550 §6.4, RFC 4585 §6, RFC 5104 §4.3.1, REMB,
transport-wide congestion control feedback).

``parse_compound`` splits a compound packet (RFC 3550 §6.1) and raises ``ValueError`` on
any lying length or truncated body, so the caller can drop and count the whole datagram.
"""

from __future__ import annotations

import struct

SR, RR, SDES, BYE, RTPFB, PSFB = 200, 201, 202, 203, 205, 206
FMT_NACK = 1  # RFC 4585 §6.2.1
FMT_PLI = 1  # RFC 4585 §6.3.1
FMT_FIR = 4  # RFC 5104 §4.3.1
FMT_AFB = 15  # RFC 4585 §6.4; REMB (draft-alvestrand-rmcat-remb §2.2) lives here
FMT_TWCC = 15  # RTPFB; draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1
URI_TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"

_BLOCK = struct.Struct("!IB3sIIII")


def _header(count: int, packet_type: int, body: bytes) -> bytes:
    """RFC 3550 §6.4.1 common header; the length is in 32-bit words minus one."""
    if len(body) % 4:
        raise ValueError("rtcp: body not a multiple of 4 bytes")
    return struct.pack("!BBH", 0x80 | count, packet_type, len(body) // 4) + body


class ReportBlock:
    """RFC 3550 §6.4.1 reception report block (24 bytes)."""

    __slots__ = ("cumulative_lost", "dlsr", "fraction_lost", "highest_sequence", "jitter",
                 "lsr", "ssrc")

    def __init__(self, ssrc: int, fraction_lost: int = 0, cumulative_lost: int = 0,
                 highest_sequence: int = 0, jitter: int = 0, lsr: int = 0, dlsr: int = 0) -> None:
        self.ssrc = ssrc
        self.fraction_lost = fraction_lost
        self.cumulative_lost = cumulative_lost
        self.highest_sequence = highest_sequence
        self.jitter = jitter
        self.lsr = lsr
        self.dlsr = dlsr

    @classmethod
    def parse(cls, data: bytes, pos: int) -> ReportBlock:
        ssrc, frac, lost, high, jitter, lsr, dlsr = _BLOCK.unpack_from(data, pos)
        lost_i = int.from_bytes(lost, "big", signed=True)
        return cls(ssrc, frac, lost_i, high, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        lost = max(-(1 << 23), min((1 << 23) - 1, self.cumulative_lost))
        return _BLOCK.pack(self.ssrc, self.fraction_lost, lost.to_bytes(3, "big", signed=True),
                           self.highest_sequence, self.jitter, self.lsr, self.dlsr)


class SenderReport:
    """RFC 3550 §6.4.1 SR."""

    def __init__(self, ssrc: int, ntp: int, rtp_timestamp: int, packets: int, octets: int,
                 reports: list[ReportBlock] | None = None) -> None:
        self.ssrc = ssrc
        self.ntp = ntp  # 64-bit NTP timestamp
        self.rtp_timestamp = rtp_timestamp
        self.packets = packets
        self.octets = octets
        self.reports = reports or []

    @classmethod
    def parse(cls, count: int, body: bytes) -> SenderReport:
        if len(body) < 24 + 24 * count:
            raise ValueError("rtcp: SR truncated")
        ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", body, 0)
        reports = [ReportBlock.parse(body, 24 + 24 * i) for i in range(count)]
        return cls(ssrc, ntp, rtp_ts, packets, octets, reports)

    def __bytes__(self) -> bytes:
        body = struct.pack("!IQIII", self.ssrc, self.ntp, self.rtp_timestamp & 0xFFFFFFFF,
                           self.packets & 0xFFFFFFFF, self.octets & 0xFFFFFFFF)
        return _header(len(self.reports), SR, body + b"".join(map(bytes, self.reports)))


class ReceiverReport:
    """RFC 3550 §6.4.2 RR."""

    def __init__(self, ssrc: int, reports: list[ReportBlock] | None = None) -> None:
        self.ssrc = ssrc
        self.reports = reports or []

    @classmethod
    def parse(cls, count: int, body: bytes) -> ReceiverReport:
        if len(body) < 4 + 24 * count:
            raise ValueError("rtcp: RR truncated")
        (ssrc,) = struct.unpack_from("!I", body, 0)
        return cls(ssrc, [ReportBlock.parse(body, 4 + 24 * i) for i in range(count)])

    def __bytes__(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(map(bytes, self.reports))
        return _header(len(self.reports), RR, body)


class Pli:
    """RFC 4585 §6.3.1 Picture Loss Indication."""

    def __init__(self, sender_ssrc: int, media_ssrc: int) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc

    def __bytes__(self) -> bytes:
        return _header(FMT_PLI, PSFB, struct.pack("!II", self.sender_ssrc, self.media_ssrc))


class Fir:
    """RFC 5104 §4.3.1 Full Intra Request: one FCI entry per requested SSRC."""

    def __init__(self, sender_ssrc: int, entries: list[tuple[int, int]]) -> None:
        self.sender_ssrc = sender_ssrc
        self.entries = entries  # (media ssrc, command sequence number)

    @classmethod
    def parse(cls, sender_ssrc: int, fci: bytes) -> Fir:
        if len(fci) % 8:
            raise ValueError("rtcp: FIR FCI not a multiple of 8")
        entries = [(struct.unpack_from("!I", fci, i)[0], fci[i + 4]) for i in range(0, len(fci), 8)]
        return cls(sender_ssrc, entries)

    def __bytes__(self) -> bytes:
        fci = b"".join(struct.pack("!IB3x", s, n & 0xFF) for s, n in self.entries)
        return _header(FMT_FIR, PSFB, struct.pack("!II", self.sender_ssrc, 0) + fci)


class Nack:
    """RFC 4585 §6.2.1 Generic NACK: lost sequence numbers as (PID, BLP) pairs."""

    def __init__(self, sender_ssrc: int, media_ssrc: int, lost: list[int]) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        self.lost = lost

    @classmethod
    def parse(cls, sender_ssrc: int, media_ssrc: int, fci: bytes) -> Nack:
        lost: list[int] = []
        for i in range(0, len(fci) - 3, 4):
            pid, blp = struct.unpack_from("!HH", fci, i)
            lost.append(pid)
            lost.extend((pid + b + 1) & 0xFFFF for b in range(16) if blp & (1 << b))
        return cls(sender_ssrc, media_ssrc, lost)

    def __bytes__(self) -> bytes:
        todo = sorted({s & 0xFFFF for s in self.lost})
        if todo:  # start after the widest circular gap, so 65535 comes before 0
            gaps = [((todo[(i + 1) % len(todo)] - s) & 0xFFFF, i) for i, s in enumerate(todo)]
            cut = max(gaps)[1] + 1
            todo = todo[cut:] + todo[:cut]
        # One pass (linear in the number of sequence numbers): in this circular order the
        # 16 numbers after a PID that its BLP covers are the ones that follow it.
        entries: list[bytes] = []
        i, n = 0, len(todo)
        while i < n:
            pid = todo[i]
            blp = 0
            i += 1
            while i < n and 1 <= (d := (todo[i] - pid) & 0xFFFF) <= 16:
                blp |= 1 << (d - 1)
                i += 1
            entries.append(struct.pack("!HH", pid, blp))
        fci = b"".join(entries)
        return _header(FMT_NACK, RTPFB, struct.pack("!II", self.sender_ssrc, self.media_ssrc) + fci)


class Remb:
    """Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb-03 §2.2)."""

    def __init__(self, sender_ssrc: int, bitrate: int, ssrcs: list[int]) -> None:
        self.sender_ssrc = sender_ssrc
        self.bitrate = bitrate
        self.ssrcs = ssrcs

    @classmethod
    def parse(cls, sender_ssrc: int, fci: bytes) -> Remb:
        if len(fci) < 8 or fci[:4] != b"REMB":
            raise ValueError("rtcp: not a REMB")
        n = fci[4]
        if len(fci) < 8 + 4 * n:
            raise ValueError("rtcp: REMB truncated")
        exp, mantissa = fci[5] >> 2, ((fci[5] & 0x03) << 16) | (fci[6] << 8) | fci[7]
        ssrcs = list(struct.unpack_from(f"!{n}I", fci, 8))
        return cls(sender_ssrc, mantissa << exp, ssrcs)

    def __bytes__(self) -> bytes:
        exp, mantissa = 0, max(0, self.bitrate)
        while mantissa >= 1 << 18:  # 18-bit mantissa, 6-bit exponent
            mantissa >>= 1
            exp += 1
        fci = b"REMB" + bytes([len(self.ssrcs), (exp << 2) | (mantissa >> 16),
                               (mantissa >> 8) & 0xFF, mantissa & 0xFF])
        fci += b"".join(struct.pack("!I", s) for s in self.ssrcs)
        return _header(FMT_AFB, PSFB, struct.pack("!II", self.sender_ssrc, 0) + fci)


class TransportFeedback:
    """Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
    extensions-01 §3.1): the arrival time of each packet by transport-wide sequence number.

    ``arrivals`` holds one ``(sequence number mod 2**16, arrival time in µs or None when not
    received)`` per packet covered, in order from ``base_seq``. Times are absolute on the
    receiver's clock: ``reference_time * 64_000`` plus the receive deltas so far (§3.1.5,
    250 µs units), so parsed times are multiples of 250 µs. ``reference_time`` is the 24-bit
    field sign-extended (§3.1: "signed integer ... multiples of 64ms"); compare it between
    feedbacks modulo 2**24, since the sender's clock wraps it.

    ``bytes()`` rounds each delta to 250 µs the way libwebrtc's AddReceivedPacket does (to
    the nearest, ties away from zero, carrying the rounded time on), so times that are
    multiples of 250 µs round-trip exactly; it raises ValueError if a delta does not fit 16
    bits signed (±8.192 s: split the feedback), if the sequence numbers do not run on from
    ``base_seq``, or if there are no packets or more than ``TransportFeedback.MAX_PACKETS``.
    """

    MAX_PACKETS = 8192  # our bound on packet status count: a hostile count costs no more

    def __init__(self, sender_ssrc: int, media_ssrc: int, base_seq: int, reference_time: int,
                 fb_count: int, arrivals: list[tuple[int, int | None]]) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        self.base_seq = base_seq
        self.reference_time = reference_time  # 64 ms units, signed 24 bits
        self.fb_count = fb_count  # feedback packet count, 8 bits
        self.arrivals = arrivals

    @classmethod
    def parse(cls, sender_ssrc: int, media_ssrc: int, fci: bytes,
              max_packets: int = MAX_PACKETS) -> TransportFeedback:
        n = len(fci)
        if n < 8:
            raise ValueError("rtcp: TWCC truncated")
        base, count = struct.unpack_from("!HH", fci, 0)
        reference = int.from_bytes(fci[4:7], "big", signed=True)
        if count == 0:
            raise ValueError("rtcp: TWCC packet status count 0")
        if count > min(max_packets, cls.MAX_PACKETS):
            raise ValueError("rtcp: TWCC packet status count too large")
        symbols: list[int] = []
        pos = 8
        while len(symbols) < count:  # every chunk adds at least one symbol
            if pos + 2 > n:
                raise ValueError("rtcp: TWCC status chunks truncated")
            chunk = (fci[pos] << 8) | fci[pos + 1]
            pos += 2
            room = count - len(symbols)  # the last chunk may describe more: ignore those
            if not chunk & 0x8000:  # §3.1.3 run length chunk: T=0, 2-bit S, 13-bit length
                run = chunk & 0x1FFF
                if run == 0:
                    raise ValueError("rtcp: TWCC empty run length chunk")
                symbols.extend([(chunk >> 13) & 0x03] * min(run, room))
            elif not chunk & 0x4000:  # §3.1.4 status vector, S=0: fourteen 1-bit symbols
                symbols.extend((chunk >> (13 - k)) & 0x01 for k in range(min(14, room)))
            else:  # §3.1.4 status vector, S=1: seven 2-bit symbols
                symbols.extend((chunk >> (12 - 2 * k)) & 0x03 for k in range(min(7, room)))
        if 3 in symbols:  # §3.1.1: 11 is reserved (libwebrtc refuses it too)
            raise ValueError("rtcp: TWCC reserved status symbol")
        # §3.1.5: a 1-byte unsigned delta per "small delta" symbol, 2 bytes signed per
        # "large or negative delta", in 250 µs units, the first relative to reference time.
        arrivals: list[tuple[int, int | None]] = []
        t = reference * 64_000
        for i, symbol in enumerate(symbols):
            seq = (base + i) & 0xFFFF
            if symbol == 0:
                arrivals.append((seq, None))
                continue
            if pos + symbol > n:
                raise ValueError("rtcp: TWCC receive deltas truncated")
            t += int.from_bytes(fci[pos : pos + symbol], "big", signed=symbol == 2) * 250
            pos += symbol
            arrivals.append((seq, t))
        rest = fci[pos:]
        if len(rest) > 3 or any(rest):  # §3.1: only zero padding to 32 bits may follow
            raise ValueError("rtcp: TWCC trailing bytes")
        return cls(sender_ssrc, media_ssrc, base, reference, fci[7], arrivals)

    def __bytes__(self) -> bytes:
        count = len(self.arrivals)
        if not 0 < count <= self.MAX_PACKETS:
            raise ValueError("rtcp: TWCC needs 1 to MAX_PACKETS packets")
        if not -(1 << 23) <= self.reference_time < 1 << 23:
            raise ValueError("rtcp: TWCC reference time does not fit 24 bits signed")
        symbols: list[int] = []
        deltas: list[bytes] = []
        last = self.reference_time * 64_000
        for i, (seq, arrival) in enumerate(self.arrivals):
            if seq != (self.base_seq + i) & 0xFFFF:
                raise ValueError("rtcp: TWCC sequence numbers do not run on from base_seq")
            if arrival is None:
                symbols.append(0)
                continue
            diff = arrival - last  # to 250 µs ticks, ties away from zero (libwebrtc)
            ticks = (diff + 125) // 250 if diff >= 0 else -((125 - diff) // 250)
            if not -(1 << 15) <= ticks < 1 << 15:
                raise ValueError("rtcp: TWCC receive delta does not fit 16 bits")
            last += ticks * 250
            if 0 <= ticks <= 0xFF:  # §3.1.5 small delta, else large or negative
                symbols.append(1)
                deltas.append(bytes([ticks]))
            else:
                symbols.append(2)
                deltas.append(ticks.to_bytes(2, "big", signed=True))
        chunks: list[int] = []
        i = 0
        while i < count:
            run = 1
            while i + run < count and run < 0x1FFF and symbols[i + run] == symbols[i]:
                run += 1
            if run >= 7:  # §3.1.3 run length chunk
                chunks.append((symbols[i] << 13) | run)
                i += run
                continue
            window = symbols[i : i + 14]
            if len(window) > 7 and 2 not in window:  # §3.1.4 fourteen 1-bit symbols
                chunks.append(0x8000 | sum(s << (13 - k) for k, s in enumerate(window)))
                i += 14
            else:  # §3.1.4 seven 2-bit symbols; past the count they are ignored
                chunks.append(0xC000 | sum(s << (12 - 2 * k)
                                           for k, s in enumerate(symbols[i : i + 7])))
                i += 7
        body = struct.pack(f"!IIHH3sB{len(chunks)}H", self.sender_ssrc, self.media_ssrc,
                           self.base_seq & 0xFFFF, count,
                           self.reference_time.to_bytes(3, "big", signed=True),
                           self.fb_count & 0xFF, *chunks)
        body += b"".join(deltas)
        body += bytes(-len(body) % 4)  # §3.1 zero padding to 32 bits
        return _header(FMT_TWCC, RTPFB, body)


class Other:
    """Any packet the SFU does not act on (SDES, BYE, XR, unknown feedback)."""

    def __init__(self, packet_type: int, count: int) -> None:
        self.packet_type = packet_type
        self.count = count


RtcpPacket = (SenderReport | ReceiverReport | Pli | Fir | Nack | Remb | TransportFeedback
              | Other)


def parse_compound(data: bytes, twcc_max: int = TransportFeedback.MAX_PACKETS
                   ) -> list[RtcpPacket]:
    """Split and parse a compound RTCP packet (RFC 3550 §6.1); ValueError if malformed.

    A transport feedback is parsed only with ``twcc_max`` > 0 (else it is ``Other``,
    costing nothing), and one that reports more than ``twcc_max`` packets is malformed:
    its parse costs a loop per packet, which a peer that was never offered transport-cc,
    or that inflates its reports, must not be able to make the SFU run.
    """
    out: list[RtcpPacket] = []
    pos = 0
    n = len(data)
    if n < 4:
        raise ValueError("rtcp: shorter than a header")
    while pos < n:
        if pos + 4 > n:
            raise ValueError("rtcp: truncated header")
        first, ptype, words = struct.unpack_from("!BBH", data, pos)
        if first >> 6 != 2:
            raise ValueError("rtcp: bad version")
        end = pos + 4 + 4 * words
        if end > n:
            raise ValueError("rtcp: length field runs past the datagram")
        body = data[pos + 4 : end]
        if first & 0x20:  # RFC 3550 §6.4.1 P: padding count in the last octet
            if not body or body[-1] == 0 or body[-1] > len(body):
                raise ValueError("rtcp: bad padding")
            body = body[: len(body) - body[-1]]
        count = first & 0x1F
        out.append(_parse_one(ptype, count, body, twcc_max))
        pos = end
    return out


def _parse_one(ptype: int, count: int, body: bytes, twcc_max: int) -> RtcpPacket:
    if ptype == SR:
        return SenderReport.parse(count, body)
    if ptype == RR:
        return ReceiverReport.parse(count, body)
    if ptype in (RTPFB, PSFB):
        if len(body) < 8:  # RFC 4585 §6.1: sender and media SSRC always present
            raise ValueError("rtcp: feedback truncated")
        sender, media = struct.unpack_from("!II", body, 0)
        fci = body[8:]
        if ptype == RTPFB and count == FMT_NACK:
            return Nack.parse(sender, media, fci)
        if ptype == RTPFB and count == FMT_TWCC and twcc_max > 0:
            return TransportFeedback.parse(sender, media, fci, twcc_max)
        if ptype == PSFB and count == FMT_PLI:
            return Pli(sender, media)
        if ptype == PSFB and count == FMT_FIR:
            return Fir.parse(sender, fci)
        if ptype == PSFB and count == FMT_AFB and fci[:4] == b"REMB":
            return Remb.parse(sender, fci)
    return Other(ptype, count)


def ntp_now(unix_time: float) -> int:
    """64-bit NTP timestamp (RFC 3550 §4) for a Unix time."""
    t = unix_time + 2208988800
    return (int(t) << 32) | int((t % 1) * (1 << 32))
