"""Type stub for sfu/_fanout.c: the per-subscriber forwarding loop, compiled."""

from collections.abc import Callable
from typing import Any

BUFFER: int

class Sender:
    """One RawPeer's outbound for fanout(): SRTP context and UDP destination."""

    tap: Callable[[bytes], object] | None  # tests only: every plaintext packet, pre-SRTP

    @property
    def ready(self) -> bool: ...
    def point(self, protect: int, ctx: int, session: Any, nominated: dict[int, Any],
              pair: Any, fileno: int, host: str, port: int) -> None: ...
    def clear(self) -> None: ...

class Lane:
    """One slot's rewrite state, shared by Slot.forward and fanout()."""

    sender: Sender | None
    active: bool
    waiting_key: bool
    started: bool
    paced: bool
    vp8: bool
    picture_offset: int
    tl0_offset: int
    pt: int
    ssrc: int
    seq_offset: int
    ts_offset: int
    last_in_seq: int
    resume_seq: int
    last_out_seq: int
    last_out_ts: int
    last_out_time: float
    packets: int
    octets: int
    @property
    def max_tid(self) -> int: ...
    @property
    def tid_cur(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def pictures_dropped(self) -> int: ...
    @property
    def temporal_dropped(self) -> int: ...
    def __init__(self, sender: Sender | None = None) -> None: ...
    def temporal(self, payload: bytes, seq: int) -> bool: ...
    def set_max_tid(self, tid: int) -> None: ...
    def begin_run(self) -> None: ...
    def drop_log(self) -> list[int]: ...
    def set_ext(self, mid_elem: bytes, level_head: bytes, ast_head: bytes,
                one_byte: bool) -> None: ...
    def extensions(self, level: bytes | None, ast: bytes | None) -> bytes | None: ...
    def note_sent(self, out_seq: int, in_seq: int) -> None: ...
    def sent_as(self, out_seq: int) -> int: ...
    def skip(self, seq: int) -> None: ...

class Batch:
    """The runs fanout() staged, per peer, until flush() sends each with UDP GSO."""

    sends: int
    packets: int
    failed: int
    @property
    def pending(self) -> bool: ...
    def flush(self) -> int: ...

def fanout(lanes: list[Lane], data: bytes, start: int, end: int, level: bytes | None,
           ast: bytes | None, now: float, batch: Batch | None = None,
           ) -> tuple[int, int, int, int, list[int] | None, int]: ...
def skip(lanes: list[Lane], seq: int) -> None: ...
