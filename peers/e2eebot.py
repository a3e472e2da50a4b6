"""A Python participant that publishes real, end-to-end encrypted VP8 and Opus.

``E2eeBot`` joins a room over the WebSocket (``SignalingClient``, password admission),
runs the media-keys protocol (``e2ee.mediakeys.KeyManager``) and publishes through the
SFU with a ``MediaBot`` whose frames come from real encoders (PyAV: libvpx VP8, libopus):

* video: a solid colour (``color``) under a moving textured bar in the top rows, so a
  receiver that decrypts and decodes can check the colour of the lower part;
* audio: a quiet 440 Hz tone, 20 ms Opus frames.

Every frame is encrypted with ``e2ee.sframe`` (e2ee-worker/FORMAT.md) before the
MediaBot packetizes it (RFC 7741 for VP8). The bot also decrypts what it receives, so it
is the "decrypting participant" of tests, and it exposes its keys (current and old) and
the frames it sent and received, so a test can prove who can read what.
"""

from __future__ import annotations

import contextlib
import logging
from fractions import Fraction
from typing import Any

import av
import numpy as np

from e2ee.mediakeys import DEBOUNCE, SWITCH_TIMEOUT, KeyManager, Peer
from e2ee.sframe import FrameDecryptor, FrameEncryptor, FrameRejected, Kind, SendKey
from peers.client import SignalingClient
from peers.files import ReceivedFile, hand, reaction, receive_file
from peers.mediabot import MediaBot, Received
from sfu.ice import IcePolicy
from sfu.vp8 import Vp8Descriptor

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
AUDIO_FRAME = 960  # 20 ms at 48 kHz (RFC 7587 §4.2: the timestamp clock is 48 kHz)
BAR_ROWS = 48  # the moving bar covers the top rows; the rest is the solid colour


class VideoSource:
    """A libvpx VP8 encoder fed a test pattern: solid ``color`` + a moving bar on top."""

    def __init__(self, color: tuple[int, int, int], width: int = 320, height: int = 240,
                 fps: int = 15) -> None:
        self.color = color
        self.width, self.height = width, height
        self.frames = 0
        ctx: Any = av.CodecContext.create("libvpx", "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = Fraction(1, fps)
        ctx.framerate = Fraction(fps)
        ctx.bit_rate = 600_000
        ctx.gop_size = 10 * fps  # key frames on request, else every 10 s
        # Realtime, no look-ahead: one encoded frame out per frame in.
        ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        self.ctx = ctx

    def picture(self, n: int) -> np.ndarray[Any, Any]:
        image = np.empty((self.height, self.width, 3), np.uint8)
        image[:] = self.color
        x = (n * 8) % self.width
        checker = ((np.arange(BAR_ROWS)[:, None] // 4 + np.arange(self.width)[None, :] // 4) % 2)
        image[:BAR_ROWS] = (checker * 255).astype(np.uint8)[:, :, None]
        image[:BAR_ROWS, x : x + 24] = (255, 255, 0)
        return image

    def encode(self, key: bool) -> bytes | None:
        frame = av.VideoFrame.from_ndarray(self.picture(self.frames), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = self.frames
        self.frames += 1
        if key:
            frame.pict_type = av.video.frame.PictureType.I  # libvpx: VPX_EFLAG_FORCE_KF
        packets = self.ctx.encode(frame)
        return b"".join(bytes(p) for p in packets) or None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ctx.close()


class AudioSource:
    """A libopus encoder fed a quiet tone, one 20 ms frame per call."""

    def __init__(self, hz: float = 440.0, amplitude: int = 600) -> None:
        ctx: Any = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.bit_rate = 32000
        self.ctx = ctx
        self.hz, self.amplitude = hz, amplitude
        self.samples = 0

    def encode(self) -> bytes | None:
        t = (self.samples + np.arange(AUDIO_FRAME)) / SAMPLE_RATE
        pcm = (np.sin(2 * np.pi * self.hz * t) * self.amplitude).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.samples
        self.samples += AUDIO_FRAME
        packets = self.ctx.encode(frame)
        return bytes(packets[0]) if packets else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ctx.close()


class E2eeBot:
    """One end-to-end encrypted participant: signaling, media keys, SFU media."""

    def __init__(self, url: str, room: str, password: str, name: str = "bot", *,
                 ice: IcePolicy | None = None, color: tuple[int, int, int] = (200, 30, 60),
                 width: int = 320, height: int = 240, fps: int = 15, audio: bool = True,
                 debounce: float = DEBOUNCE, switch_timeout: float = SWITCH_TIMEOUT) -> None:
        self.url, self.room, self.password, self.name = url, room, password, name
        self.ice = ice
        self.color = color
        self.fps = fps
        self.audio = audio
        self.encryptor = FrameEncryptor()
        self.decryptor = FrameDecryptor()
        self.video = VideoSource(color, width, height, fps)
        self.sound = AudioSource() if audio else None
        self.sent_frames: dict[str, list[bytes]] = {"audio": [], "video": []}  # encrypted
        self.debounce, self.switch_timeout = debounce, switch_timeout
        self.client: SignalingClient | None = None
        self.keys: KeyManager | None = None
        self._hand: dict[str, Any] | None = None  # our raised hand, repeated to newcomers
        self.media: MediaBot | None = None

    @property
    def id(self) -> str:
        assert self.client is not None and self.client.id is not None
        return self.client.id

    async def start(self) -> None:
        """Join, start the media-keys protocol, publish."""
        client = self.client = await SignalingClient.connect(self.url)
        await client.join(self.room, self.password)
        keys = self.keys = KeyManager(client, self.encryptor, self.decryptor, self.name,
                                      debounce=self.debounce, switch_timeout=self.switch_timeout)
        media = self.media = MediaBot(
            self.id, signal=client.send, ice=self.ice, fps=self.fps, audio=self.audio,
            video_frames=self._video_frame,
            audio_frames=self._audio_frame if self.audio else None,
        )
        keys.on_key_frame_needed = media.want_key_frame  # after a rotation (PROTOCOL.md)
        keys.on_peer = self._greet
        await client.set_media_handler(media.on_message)
        await keys.start()
        await media.publish()

    # -- hands, reactions, files (peers/files.py; PROTOCOL.md "Hands and reactions", "Files") --

    async def raise_hand(self, raised: bool = True) -> None:
        """Raise (or lower) our hand for everyone; a member who joins later is told of a
        raised hand once its hello verified, with the time it was raised, as the page
        does (PROTOCOL.md "Hands and reactions")."""
        assert self.client is not None
        self._hand = hand(raised) if raised else None
        await self.client.seal("*", hand(raised))

    async def _greet(self, peer: Peer) -> None:
        if self._hand is not None and self.client is not None:
            await self.client.seal(peer.id, self._hand)

    async def react(self, emoji: str) -> None:
        assert self.client is not None
        await self.client.seal("*", reaction(emoji))

    async def receive_file(self, timeout: float = 30.0) -> ReceivedFile:
        """The next file sent to this bot (or to everyone), checked as the page checks it.
        The key manager reads the inbox, so the transfer reads what it passes on."""
        assert self.client is not None and self.keys is not None
        return await receive_file(self.client, self.keys.other, timeout=timeout)

    # -- frame sources (MediaBot hooks) -------------------------------------------------------

    def _encrypt(self, kind: Kind, frame: bytes | None) -> bytes | None:
        if not frame:
            return None
        try:
            out = self.encryptor.encrypt(kind, frame)
        except FrameRejected:
            return None  # no key yet: nothing leaves in clear (FORMAT.md §7)
        self.sent_frames[kind].append(out)
        return out

    def _video_frame(self, key_wanted: bool) -> bytes | None:
        return self._encrypt("video", self.video.encode(key_wanted))

    def _audio_frame(self) -> bytes | None:
        assert self.sound is not None
        return self._encrypt("audio", self.sound.encode())

    # -- keys ---------------------------------------------------------------------------------

    @property
    def current_key(self) -> SendKey | None:
        """The key frames are encrypted with now."""
        return self.encryptor.current

    @property
    def old_keys(self) -> list[SendKey]:
        """Every sending key used before the current one, oldest first."""
        assert self.keys is not None
        return self.keys.sent_keys[:-1]

    # -- what was received ----------------------------------------------------------------

    def received_frames(self, participant: str, kind: Kind) -> list[bytes]:
        """``participant``'s encrypted frames as received, complete ones only, in order."""
        assert self.media is not None
        stream = self.media.stream(participant, kind)
        if stream is None:
            return []
        if kind == "audio":
            return stream.ordered()
        return reassemble_vp8(stream)

    def decrypt(self, participant: str, kind: Kind, frames: list[bytes],
                decryptor: FrameDecryptor | None = None) -> list[bytes | FrameRejected]:
        """Each frame's plaintext, or the refusal (with ``decryptor``: someone else's keys)."""
        out: list[bytes | FrameRejected] = []
        for frame in frames:
            try:
                out.append((decryptor or self.decryptor).decrypt(kind, participant, frame))
            except FrameRejected as exc:
                out.append(exc)
        return out

    async def close(self, leave: bool = True) -> None:
        if self.keys is not None:
            await self.keys.close()
        if self.client is not None and leave:
            with contextlib.suppress(Exception):
                await self.client.leave()
        if self.media is not None:
            await self.media.close()
        if self.client is not None:
            await self.client.close()
        self.video.close()
        if self.sound is not None:
            self.sound.close()


def reassemble_vp8(stream: Received) -> list[bytes]:
    """RFC 7741 depacketization: frames start at S=1, PID=0 and run over consecutive
    sequence numbers of one RTP timestamp. A frame is kept only when the next frame's first
    packet directly follows its last one (so it is complete); the newest frame is left out."""
    frames: list[bytes] = []
    current: bytearray | None = None
    ts: int | None = None
    last = 0
    for n in sorted(stream.payloads):
        payload = stream.payloads[n]
        try:
            d = Vp8Descriptor.parse(payload)
        except ValueError:
            current = None
            continue
        body = payload[d.size :]
        if d.start_of_partition and d.partition_id == 0:
            if current is not None and n == last + 1:
                frames.append(bytes(current))
            current, ts, last = bytearray(body), stream.timestamps.get(n), n
        elif current is not None and n == last + 1 and stream.timestamps.get(n) == ts:
            current += body
            last = n
        else:
            current = None  # a gap: this frame is broken
    return frames


def decode_vp8(frames: list[bytes]) -> list[np.ndarray[Any, Any]]:
    """Decode plaintext VP8 frames (from the first key frame on) to RGB pictures."""
    decoder: Any = av.CodecContext.create("vp8", "r")
    pictures: list[np.ndarray[Any, Any]] = []
    started = False
    for frame in frames:
        started = started or (len(frame) > 0 and frame[0] & 0x01 == 0)
        if not started:
            continue
        try:
            for picture in decoder.decode(av.packet.Packet(frame)):
                pictures.append(picture.to_ndarray(format="rgb24"))
        except av.error.FFmpegError:
            log.info("a VP8 frame did not decode")
    return pictures
