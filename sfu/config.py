"""SFU settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SfuConfig:
    """Settings of the media plane; defaults suit one machine on loopback."""

    bind_host: str = "127.0.0.1"  # address the UDP sockets bind to
    announced_host: str | None = None  # address put in candidates (1:1 NAT), default bind_host
    port_min: int = 0  # UDP port range for ICE; 0/0 = any port
    port_max: int = 0
    last_n: int = 0  # video from at most N publishers per subscriber; 0 = off
    pli_interval: float = 1.0  # at most one key-frame request per publisher per interval (s)
    # no SRTP/SRTCP for this long, once media or RTCP is due from a participant, = dead
    # (docs/SFU.md "Lifetime and cleanup", "Join storms")
    idle_timeout: float = 15.0
    # ICE+DTLS must be up this long after the SFU's first answer or offer to a participant
    connect_timeout: float = 30.0
    # Ingress limit per transport, SRTP + SRTCP datagrams per second, checked before
    # libsrtp (docs/SFU.md "Ingress limit"). A publisher at the REMB ceiling sends about 400
    # (video at max_video_bitrate, Opus, RTX, RTCP); a subscriber sends only RTCP feedback.
    max_pub_pps: int = 1000
    max_sub_pps: int = 500
    # dynacast (docs/SFU.md "Dynacast"): tell a simulcast publisher to stop encoding the
    # layers no subscriber needs, once unneeded this long (s); needed ones resume at once
    max_screens: int = 1  # screen shares at once per room (docs/SFU.md "Screen sharing")
    dynacast: bool = True
    dynacast_pause_delay: float = 5.0
    rtcp_interval: float = 1.0  # receiver reports + REMB to publishers, seconds
    max_video_bitrate: int = 2_500_000  # REMB ceiling sent to publishers, bit/s
    # each subscriber's downlink estimate: "remb" (its own receive-side estimate) or
    # "transport-cc" (the SFU's send-side estimate from transport-wide feedback,
    # sfu/transportcc.py; the compiled fan-out numbers its packets)
    bwe: str = "remb"
    # sub re-offers are coalesced: a change is offered once none followed it for
    # ``offer_quiet`` seconds, or ``offer_max_delay`` after the first one waiting (0: at once)
    offer_quiet: float = 0.15
    offer_max_delay: float = 1.0
    speaker_interval: float = 0.3  # how often the active speaker is re-evaluated, seconds
    speaker_window: float = 1.0  # audio levels averaged over this window, seconds
    speaker_threshold: int = 60  # mean level (-dBov) must be below this to count as speaking
    drop_silence: bool = True  # do not forward audio whose RFC 6464 level is 127 (silence)
    rtx_cache: int = 512  # packets kept per published track for retransmission
    # each subscriber's packets of one event-loop turn leave in one UDP GSO send
    # (sfu/outbox.py); off: one sendto per packet
    send_batching: bool = True
