"""sfu.srtp.Protector against pylibsrtp's public API (RFC 3711)."""

from __future__ import annotations

import os

import pylibsrtp
import pytest
from pylibsrtp import Policy, Session

from sfu.srtp import Protector

KEY = bytes(range(30))  # 16-byte master key + 14-byte salt (AES_CM_128_HMAC_SHA1_80)


def rtp(seq: int, size: int = 1100) -> bytes:
    return bytes([0x80, 96]) + seq.to_bytes(2, "big") + bytes(4) + b"\x01\x02\x03\x04" + \
        os.urandom(size)


def sessions() -> tuple[Session, Session]:
    out = Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND)
    return Session(out), Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))


def receiver() -> Session:
    return Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))


def test_protect_is_byte_identical_to_pylibsrtp() -> None:
    plain, fast = sessions()
    p = Protector(fast)
    for seq in range(1, 50):
        packet = rtp(seq, 20 + seq * 20)
        assert p.protect(packet) == plain.protect(packet)
    rtcp = b"\x80\xc9\x00\x01\x01\x02\x03\x04"  # RFC 3550 §6.4.2 RR, no blocks
    assert p.protect_rtcp(rtcp) == plain.protect_rtcp(rtcp)


def test_unprotect_round_trip_and_replay() -> None:
    p = Protector(sessions()[0])
    rx = Protector(receiver())
    packet = rtp(7)
    protected = p.protect(packet)
    assert protected != packet and len(protected) == len(packet) + 10  # 80-bit tag
    assert rx.unprotect(protected) == packet
    with pytest.raises(pylibsrtp.Error):
        rx.unprotect(protected)  # RFC 3711 §3.3.2: a replay is rejected
    forged = bytearray(p.protect(rtp(8)))
    forged[20] ^= 1
    with pytest.raises(pylibsrtp.Error):
        rx.unprotect(bytes(forged))  # authentication fails
    rtcp = p.protect_rtcp(b"\x80\xc9\x00\x01\x01\x02\x03\x04")
    assert rx.unprotect_rtcp(rtcp) == b"\x80\xc9\x00\x01\x01\x02\x03\x04"


def test_too_long_is_an_error_not_an_overflow() -> None:
    p = Protector(sessions()[0])
    with pytest.raises(pylibsrtp.Error):
        p.protect(rtp(1, 1500))


def test_falls_back_to_the_public_api() -> None:
    class Bare:
        """A session without pylibsrtp's internals."""

        def __init__(self, inner: Session) -> None:
            self.protect = inner.protect
            self.protect_rtcp = inner.protect_rtcp
            self.unprotect = inner.unprotect
            self.unprotect_rtcp = inner.unprotect_rtcp

    plain, other = sessions()
    p = Protector(Bare(other))  # type: ignore[arg-type]
    packet = rtp(3)
    assert p.protect(packet) == plain.protect(packet)
