// The browser's media session with the sealroom SFU (docs/SFU.md "Signaling messages").
//
//   const media = new MediaSession({ signaling, e2ee, iceServers });  // right after join()
//   media.addEventListener('track', ({ detail }) => show(detail.participant, detail.stream));
//   await media.publish(await navigator.mediaDevices.getUserMedia({ video: true, audio: true }));
//
// Two RTCPeerConnections, as in LiveKit: `pub` (this page offers its sendonly audio and
// video, the SFU answers) and `sub` (the SFU offers one sendonly m-line per track of the
// others, with a `tracks` map MID → participant; this page answers). Both use BUNDLE and
// rtcp-mux, and neither trickles ICE: an offer or answer is sent once gathering is
// complete, so it carries its candidates (the SFU's aiortc does not trickle).
//
// E2EE: every sender gets the worker's encrypt transform before any track is attached to
// it (E2ee.attachSender, then replaceTrack), and every receiver the decrypt transform for
// the participant that the SFU's `tracks` map names for its MID, before the answer that
// lets the SFU forward on that MID is sent. A receiver whose MID the map does not name
// gets a transform too, for nobody: it drops every frame (FORMAT.md §6, rule 1), so no
// byte reaches a decoder unless a member's key authenticated it. The SFU never gives a
// MID to a second participant (docs/SFU.md); if a (hostile) SFU does, the receiver is
// re-attached with the 'script' API, and the worker still refuses any frame whose key is
// not the named participant's (FORMAT.md §6, rule 7).
//
// Construct the session synchronously after `await signaling.join(...)`: the SFU may send
// its first sub offer right after `joined`, and this object must be listening by then.

import { E2ee, preferCodecs, rtcConfiguration } from '/e2ee-worker/attach.js';

export { E2ee };

const KINDS = ['audio', 'video'];

/**
 * The camera's simulcast layers (docs/SFU.md "Simulcast", "Browsers"), lowest quality
 * first: the SFU takes the `a=simulcast` list's order as the layers' order. Each is one
 * encoding of the one video m-line (RFC 8853), its own SSRC, encrypted by the same worker
 * and sender key as the others (e2ee-worker/FORMAT.md: one frame counter for all).
 * `L1T3` (three temporal layers, W3C webrtc-svc) is what Chromium uses for VP8 simulcast
 * anyway; naming it keeps it so.
 */
export const SIMULCAST_LAYERS = Object.freeze([
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000, scalabilityMode: 'L1T3' },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000, scalabilityMode: 'L1T3' },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 2_500_000, scalabilityMode: 'L1T3' },
]);
/** Debounce of a tile's size before its `sfu-video-constraints` goes out. */
const CONSTRAINT_DEBOUNCE_MS = 300;
/**
 * Simulcast by default where the browser keeps `scalabilityMode: 'L1T3'` on simulcast
 * encodings (W3C webrtc-svc): the layers the SFU is built and tested for. Probed once on a
 * throwaway RTCPeerConnection (no ICE starts before an offer): the encodings of
 * `sender.getParameters()` must be ours, each with its L1T3. Measured: Chromium 156 keeps
 * them; Firefox 153 drops `scalabilityMode` (and lists no `scalabilityModes` in
 * getCapabilities, nor does Chromium), so it publishes one layer. A capability, not a
 * browser name (docs/SFU.md "Browsers").
 */
let l1t3Simulcast = null;
function simulcastByDefault() {
  if (l1t3Simulcast !== null) return l1t3Simulcast;
  let pc = null;
  try {
    pc = new RTCPeerConnection();
    const { sender } = pc.addTransceiver('video', {
      direction: 'sendonly', sendEncodings: SIMULCAST_LAYERS.map((l) => ({ ...l })),
    });
    const got = sender.getParameters().encodings ?? [];
    l1t3Simulcast = got.length === SIMULCAST_LAYERS.length
      && got.every((e, i) => e.rid === SIMULCAST_LAYERS[i].rid && e.scalabilityMode === 'L1T3');
  } catch {
    l1t3Simulcast = false;
  } finally {
    pc?.close();
  }
  return l1t3Simulcast;
}

/**
 * The layers worth sending for a camera of `width` × `height`: libwebrtc sends at most 3
 * simulcast streams from 960×540 up, 2 from 480×270, 1 below (its `kSimulcastFormats`
 * table, video/config/simulcast.cc), dropping the *last* encodings (Chromium 156 with a
 * 640×360 camera offered ¼, ½, 1 sent 90 and 180 lines only), so a 320×240 camera would
 * send only its ¼. So a smaller camera offers only the top `n` of `layers` (½ and 1; or
 * one plain encoding, as without simulcast), each still its own size.
 */
export function layersFor(layers, width, height) {
  const pixels = (width || 0) * (height || 0);
  const n = pixels >= 960 * 540 ? 3 : pixels >= 480 * 270 ? 2 : 1;
  return n >= 2 ? layers.slice(Math.max(0, layers.length - n)) : [];
}

/**
 * A sendonly video transceiver with `layers` as its encodings; a browser that refuses
 * `scalabilityMode` gets the same layers without it (its own default).
 */
function addSimulcastTransceiver(pc, stream, layers) {
  const init = { direction: 'sendonly', streams: [stream] };
  try {
    return pc.addTransceiver('video', { ...init, sendEncodings: layers.map((l) => ({ ...l })) });
  } catch (err) {
    if (!layers.some((l) => 'scalabilityMode' in l)) throw err;
    const plain = layers.map((l) => {
      const copy = { ...l };
      delete copy.scalabilityMode;
      return copy;
    });
    return pc.addTransceiver('video', { ...init, sendEncodings: plain });
  }
}
/** Longest wait for ICE gathering before an offer/answer goes out with what it has. */
const GATHER_TIMEOUT_MS = 5000;
/** Longest wait for the SFU's answer to the pub offer. */
const ANSWER_TIMEOUT_MS = 20000;

/**
 * Resolve when `pc` has gathered its candidates, or `closed` resolves (a closed PC fires no
 * more events), or after GATHER_TIMEOUT_MS.
 */
function gathered(pc, closed) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, GATHER_TIMEOUT_MS);
    pc.addEventListener('icegatheringstatechange', check);
    closed.then(done);
  });
}

export class MediaSession extends EventTarget {
  /**
   * @param {{signaling: object, e2ee?: E2ee|null, iceServers?: RTCIceServer[],
   *          iceTransportPolicy?: 'all'|'relay'}} options
   * signaling: the SignalingClient of signaling.js (send(msg), 'message' events).
   * e2ee: an E2ee (attach.js), or null for no encryption (tests only).
   * simulcast: publish the camera as SIMULCAST_LAYERS (true) or as one encoding (false);
   * null: true where the browser keeps L1T3 on simulcast encodings (simulcastByDefault).
   */
  constructor({ signaling, e2ee = null, iceServers = [], iceTransportPolicy = 'all', simulcast = null }) {
    super();
    /** The camera's encodings: SIMULCAST_LAYERS, or [] for one layer (simulcast false). */
    this.layers = (simulcast ?? simulcastByDefault()) ? SIMULCAST_LAYERS : [];
    this.sentLayers = []; // the RIDs publish() offered for the camera ([]: one plain encoding)
    this.constraints = new Map(); // sub MID → {sent, want, timer}: the max_height told the SFU
    this.signaling = signaling;
    this.e2ee = e2ee;
    this.config = rtcConfiguration(
      { iceServers, iceTransportPolicy, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' },
      e2ee ? e2ee.api : null,
    );
    this.pub = null;
    this.sub = null;
    this.senders = new Map(); // kind → RTCRtpSender of the pub PC
    this.screen = null; // {transceiver, track} once a screen was shared (startScreen)
    this.screenQueue = null; // the screen share change under way, if any
    this.tracks = new Map(); // sub MID → {participant, kind} from the latest sub offer
    this.active = new Map(); // sub MID → {participant, kind, track, stream} announced by 'track'
    this.streams = new Map(); // participant → MediaStream of its received tracks
    this.attached = new WeakMap(); // RTCRtpReceiver → participant its decrypt transform serves
    this.closed = false;
    this.whenClosed = new Promise((resolve) => { this.markClosed = resolve; }); // close() resolves it
    this.pubAnswer = null; // {resolve, reject} while a pub offer waits for its answer
    this.subQueue = Promise.resolve(); // sub offers are handled one at a time, in order
    this.layerQueue = Promise.resolve(); // sfu-layers changes, applied one at a time, in order
    this.layersSent = {}; // RID → whether the SFU asked for it (sfu-layers; {}: all, untold)
    this.onMessage = ({ detail }) => this.#onMessage(detail);
    signaling.addEventListener('message', this.onMessage);
  }

  // ------------------------------------------------------------------------------ publish

  /**
   * Publish a camera+mic stream (either track may be missing). One sendonly transceiver
   * per kind is always created, so replaceTrack() can start a missing kind later without
   * renegotiation. VP8 and Opus only (attach.js preferCodecs).
   */
  async publish(stream) {
    if (this.closed) throw new Error('media session closed');
    if (this.pub !== null) throw new Error('already publishing; use replaceTrack()');
    const pc = (this.pub = this.#newPc('pub'));
    // close() may come at any await below (the call lost its socket, or this PC failed):
    // then stop with one error, before touching the closed PC or arming the answer timer.
    const stillOpen = () => {
      if (this.closed) throw new Error('media session closed');
    };
    for (const kind of KINDS) {
      stillOpen();
      const track = stream.getTracks().find((t) => t.kind === kind) ?? null;
      const settings = track?.getSettings?.() ?? {};
      const layers = kind === 'video' ? layersFor(this.layers, settings.width, settings.height) : [];
      const transceiver = layers.length > 1
        ? addSimulcastTransceiver(pc, stream, layers)
        : pc.addTransceiver(kind, { direction: 'sendonly', streams: [stream] });
      if (kind === 'video') this.sentLayers = layers.map((l) => l.rid);
      preferCodecs(transceiver, kind);
      // The transform is in place before the track: no frame ever leaves in clear.
      if (this.e2ee) this.e2ee.attachSender(transceiver.sender, kind);
      if (track) await transceiver.sender.replaceTrack(track);
      this.senders.set(kind, transceiver.sender);
    }
    stillOpen();
    await this.#negotiatePub();
  }

  /**
   * Offer the pub PC's current transceivers to the SFU and apply its answer; `screen` is
   * the screen share's MID when one is sent (docs/SFU.md "Screen sharing"). A refused
   * re-offer (`sfu-error`, e.g. `screen-limit`) rolls the PC back and throws: the call goes
   * on as it was. A refused first offer, or no answer, fails the session ('failed').
   */
  async #negotiatePub() {
    const pc = this.pub;
    const first = pc.remoteDescription === null;
    const stillOpen = () => {
      if (this.closed) throw new Error('media session closed');
    };
    await pc.setLocalDescription();
    await gathered(pc, this.whenClosed);
    stillOpen();
    let timer;
    const answer = new Promise((resolve, reject) => {
      this.pubAnswer = { resolve, reject };
      timer = setTimeout(() => {
        this.pubAnswer = null;
        reject(new Error('no answer from the SFU'));
      }, ANSWER_TIMEOUT_MS);
    });
    let sdp;
    try {
      const msg = { type: 'sfu-offer', pc: 'pub', sdp: pc.localDescription.sdp };
      const screen = this.screen?.transceiver;
      if (screen && screen.direction === 'sendonly' && screen.mid !== null) msg.screen = screen.mid;
      this.signaling.send(msg);
      sdp = await answer;
    } catch (err) {
      this.pubAnswer = null;
      if (first || this.closed) {
        this.#fail('pub', String(err?.message ?? err));
      } else {
        await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
      }
      throw err;
    } finally {
      clearTimeout(timer); // no rejection can outlive this call (it would be unhandled)
    }
    stillOpen();
    await pc.setRemoteDescription({ type: 'answer', sdp });
  }

  /**
   * Share a screen: `track` (from getDisplayMedia, or any video track) goes out as a second
   * video m-line, one plain encoding, through the same encrypt transform as the camera (the
   * worker's one frame counter: no nonce twice, e2ee-worker/FORMAT.md). Tuned for content:
   * `contentHint = 'detail'` and resolution kept over frame rate. Throws (and sends
   * nothing) when the SFU refuses it, e.g. `screen-limit: …` when the room has its screen
   * shares already. Renegotiates the pub PC; the camera and microphone go on meanwhile.
   */
  async startScreen(track) {
    if (this.closed || this.pub === null) throw new Error('publish() first');
    if (track?.kind !== 'video') throw new Error('a screen share is a video track');
    if (this.screenQueue) await this.screenQueue.catch(() => {});
    const run = this.#startScreen(track);
    this.screenQueue = run;
    return run;
  }

  async #startScreen(track) {
    if ('contentHint' in track) track.contentHint = 'detail';
    const pc = this.pub;
    let screen = this.screen;
    if (screen === null) {
      // A transceiver of its own, kept for the next share (a stopped share leaves its
      // m-line inactive rather than removed, RFC 8829 §5.3.1), encrypted before any frame.
      const transceiver = pc.addTransceiver('video', { direction: 'sendonly' });
      preferCodecs(transceiver, 'video');
      if (this.e2ee) this.e2ee.attachSender(transceiver.sender, 'video');
      screen = this.screen = { transceiver, track: null };
    }
    const { transceiver } = screen;
    const previous = transceiver.direction;
    transceiver.direction = 'sendonly';
    try {
      await transceiver.sender.replaceTrack(track);
      screen.track = track;
      await this.#negotiatePub();
    } catch (err) {
      transceiver.direction = previous === 'sendonly' ? 'inactive' : previous;
      await transceiver.sender.replaceTrack(null).catch(() => {});
      screen.track = null;
      throw err;
    }
    const params = transceiver.sender.getParameters();
    params.degradationPreference = 'maintain-resolution';
    await transceiver.sender.setParameters(params).catch(() => {}); // a hint: not every browser takes it
    this.#emit('screen', { active: true, mid: transceiver.mid });
  }

  /** Stop sharing the screen: its m-line goes inactive and the SFU removes it everywhere. */
  async stopScreen() {
    if (this.screenQueue) await this.screenQueue.catch(() => {});
    const screen = this.screen;
    if (this.closed || screen === null || screen.track === null) return;
    const run = (async () => {
      screen.track = null;
      await screen.transceiver.sender.replaceTrack(null);
      screen.transceiver.direction = 'inactive';
      await this.#negotiatePub();
      this.#emit('screen', { active: false, mid: screen.transceiver.mid });
    })();
    this.screenQueue = run;
    return run;
  }

  /** The screen track being shared, or null. */
  get screenTrack() {
    return this.screen?.track ?? null;
  }

  /** Swap the published `kind` track, or stop sending it with null; no renegotiation. */
  async replaceTrack(kind, track) {
    const sender = this.senders.get(kind);
    if (sender === undefined) throw new Error('publish() first');
    if (track !== null && track.kind !== kind) throw new Error(`not a ${kind} track`);
    await sender.replaceTrack(track);
  }

  /**
   * The received video on sub MID `mid` is shown `height` CSS pixels high (times the
   * device pixel ratio: what the screen needs); null: no limit. Debounced by
   * CONSTRAINT_DEBOUNCE_MS and sent as `sfu-video-constraints` only when it changed, so a
   * ResizeObserver may call it on every frame of a resize. A hidden or zero-size tile
   * (height 0) asks for the smallest layer: the SFU always may send the lowest layer
   * (docs/SFU.md "Simulcast"), and the tile shows a picture at once when it reappears.
   */
  setVideoHeight(mid, height) {
    if (this.closed || typeof mid !== 'string') return;
    const want = height === null ? null : Math.max(0, Math.round(height));
    let c = this.constraints.get(mid);
    if (c === undefined) this.constraints.set(mid, (c = { sent: undefined, want, timer: 0 }));
    c.want = want;
    clearTimeout(c.timer);
    c.timer = setTimeout(() => {
      if (this.closed || c.want === c.sent || this.constraints.get(mid) !== c) return;
      c.sent = c.want;
      this.signaling.send({ type: 'sfu-video-constraints', mid, height: c.want });
    }, CONSTRAINT_DEBOUNCE_MS);
  }

  /** Ask the SFU for a key frame from my own publisher PC (after a key rotation). */
  requestKeyFrame() {
    this.signaling.send({ type: 'sfu-keyframe' });
  }

  async stats() {
    return {
      pub: this.pub ? await this.pub.getStats() : null,
      sub: this.sub ? await this.sub.getStats() : null,
    };
  }

  /** Close both PeerConnections; the caller's own tracks are not stopped. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.markClosed();
    this.signaling.removeEventListener('message', this.onMessage);
    this.pubAnswer?.reject(new Error('media session closed'));
    this.pubAnswer = null;
    for (const c of this.constraints.values()) clearTimeout(c.timer);
    this.constraints.clear();
    for (const pc of [this.pub, this.sub]) pc?.close();
    for (const [mid, info] of this.active) {
      this.#emit('track-ended', { participant: info.participant, kind: info.kind, mid, source: info.source });
    }
    this.active.clear();
    this.streams.clear();
  }

  // ---------------------------------------------------------------------------- internals

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /**
   * Set `active` on the encodings of the pub transceiver `mid` whose RID `layers` names
   * (RID → boolean; other RIDs untouched). One encoding always stays active, whatever the
   * message says: a page never stops its own camera because a server said so (a hostile
   * SFU can drop the packets anyway; it cannot make this page look as if it left).
   */
  async #setLayers(mid, layers) {
    if (this.closed || this.pub === null) return;
    const transceiver = this.pub.getTransceivers().find((t) => t.mid === mid);
    if (!transceiver || transceiver.sender.track?.kind === 'audio') return;
    const params = transceiver.sender.getParameters();
    const encodings = params.encodings ?? [];
    if (encodings.length < 2) return; // not simulcast: nothing to pause
    const want = encodings.map((e) => (typeof layers[e.rid] === 'boolean' ? layers[e.rid] : e.active !== false));
    if (!want.some(Boolean)) want[0] = true;
    if (encodings.every((e, i) => (e.active !== false) === want[i])) return;
    encodings.forEach((e, i) => { e.active = want[i]; });
    await transceiver.sender.setParameters(params);
    this.layersSent = Object.fromEntries(encodings.map((e, i) => [e.rid, want[i]]));
    this.#emit('layers', { mid, active: { ...this.layersSent } });
  }

  #newPc(name) {
    const pc = new RTCPeerConnection(this.config);
    pc.addEventListener('connectionstatechange', () => {
      if (this.closed) return;
      this.#emit('state', { pc: name, state: pc.connectionState });
      if (pc.connectionState === 'failed') {
        this.#emit('failed', { pc: name, reason: 'connection failed' });
      }
    });
    return pc;
  }

  #onMessage(msg) {
    if (this.closed || typeof msg?.type !== 'string') return;
    switch (msg.type) {
      case 'sfu-answer':
        if (msg.pc === 'pub' && this.pubAnswer && typeof msg.sdp === 'string') {
          this.pubAnswer.resolve(msg.sdp);
          this.pubAnswer = null;
        }
        return;
      case 'sfu-offer':
        if (msg.pc === 'sub' && typeof msg.sdp === 'string') {
          this.subQueue = this.subQueue
            .then(() => this.#onSubOffer(msg))
            .catch((err) => this.#fail('sub', `sub offer: ${err?.message ?? err}`));
        }
        return;
      case 'speaker':
        this.#emit('speaker', { participant: msg.participant, level: msg.level });
        return;
      case 'stream-state':
        // the SFU paused (or resumed) a stream for us: low bandwidth, or last-N
        if (typeof msg.participant === 'string' && (msg.state === 'paused' || msg.state === 'active')) {
          this.#emit('stream-state', {
            participant: msg.participant, kind: msg.kind, state: msg.state,
            reason: msg.state === 'paused' ? String(msg.reason ?? 'unknown') : null,
          });
        }
        return;
      case 'sfu-left':
        this.#emit('left', { participant: msg.participant });
        return;
      case 'sfu-layers':
        // dynacast (docs/SFU.md "Dynacast"): stop (or restart) encoding the simulcast
        // layers nobody needs; the newest message wins, applied in order
        if (typeof msg.mid === 'string' && msg.layers !== null && typeof msg.layers === 'object') {
          this.layerQueue = this.layerQueue
            .then(() => this.#setLayers(msg.mid, msg.layers))
            .catch((err) => console.warn('sfu-layers:', err?.message ?? err));
        }
        return;
      case 'sfu-error': {
        // A size hint for a MID the SFU no longer has (a race with a re-offer) is harmless:
        // the tile's next size goes to the MID the next 'track' names.
        if (msg.id === 'unknown-mid') return;
        const reason = `${msg.id}: ${msg.message}`;
        if (this.pubAnswer) { // the pub offer was refused: publish() reports it ('failed')
          this.pubAnswer.reject(new Error(reason));
          this.pubAnswer = null;
          return;
        }
        this.#emit('failed', { pc: null, reason });
        return;
      }
      default:
    }
  }

  #fail(pc, reason) {
    if (!this.closed) this.#emit('failed', { pc, reason });
  }

  /** Decrypt what `receiver` gets as `participant`'s (null: nobody's; it drops all). */
  #attach(receiver, participant) {
    const had = this.attached.get(receiver);
    if (had === participant || this.e2ee === null) {
      this.attached.set(receiver, participant);
      return true;
    }
    if (had !== undefined && this.e2ee.api !== 'script') return false; // streams: once only
    this.e2ee.attachReceiver(receiver, participant); // 'script': a new transform replaces
    this.attached.set(receiver, participant);
    return true;
  }

  async #onSubOffer(msg) {
    if (this.sub === null) {
      const pc = (this.sub = this.#newPc('sub'));
      // Attach in 'track' already (before setRemoteDescription resolves): the transform
      // must be set before the first frame reaches the receiver.
      pc.addEventListener('track', ({ transceiver, receiver }) => {
        this.#attach(receiver, this.tracks.get(transceiver.mid)?.participant ?? null);
      });
    }
    const pc = this.sub;
    this.tracks = new Map();
    for (const t of Array.isArray(msg.tracks) ? msg.tracks : []) {
      if (typeof t?.mid === 'string' && typeof t.participant === 'string' && KINDS.includes(t.kind)) {
        // source: what the SFU was told the publisher sends on it ("Screen sharing")
        const source = t.kind === 'video' && t.source === 'screen' ? 'screen' : 'camera';
        this.tracks.set(t.mid, { participant: t.participant, kind: t.kind, source });
      }
    }
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    if (this.closed) return;
    const started = [];
    const ended = [];
    for (const transceiver of pc.getTransceivers()) {
      const mid = transceiver.mid;
      if (mid === null) continue;
      const info = this.tracks.get(mid);
      // Named by nobody (now): decrypt for nobody, which drops every frame. With the streams
      // API a receiver cannot be re-attached; its old participant's keys still apply.
      if (info === undefined && this.attached.get(transceiver.receiver) !== null) this.#attach(transceiver.receiver, null);
      const was = this.active.get(mid);
      const same = was !== undefined && info !== undefined && info.participant === was.participant;
      if (same && info.source !== was.source) { // the MID now carries the other video
        ended.push([mid, was]);
        this.active.delete(mid);
        started.push([mid, info, transceiver.receiver]);
        continue;
      }
      if (was !== undefined && (info === undefined || info.participant !== was.participant)) {
        ended.push([mid, was]);
        this.active.delete(mid);
      }
      if (info !== undefined && (was === undefined || was.participant !== info.participant)) {
        if (!this.#attach(transceiver.receiver, info.participant)) {
          this.#fail('sub', `MID ${mid} changed participant; cannot re-key its receiver`);
          continue;
        }
        started.push([mid, info, transceiver.receiver]);
      }
    }
    await pc.setLocalDescription();
    await gathered(pc, this.whenClosed);
    if (this.closed) return;
    this.signaling.send({ type: 'sfu-answer', pc: 'sub', sdp: pc.localDescription.sdp });
    // One MediaStream per participant for camera and microphone, another for its screen.
    const key = (info) => (info.source === 'screen' ? `${info.participant}\u0000screen` : info.participant);
    for (const [mid, was] of ended) {
      const stream = this.streams.get(key(was));
      stream?.removeTrack(was.track);
      if (stream && stream.getTracks().length === 0) this.streams.delete(key(was));
      this.#emit('track-ended', { participant: was.participant, kind: was.kind, mid, source: was.source });
    }
    for (const [mid, info, receiver] of started) {
      let stream = this.streams.get(key(info));
      if (stream === undefined) this.streams.set(key(info), (stream = new MediaStream()));
      stream.addTrack(receiver.track);
      this.active.set(mid, { ...info, track: receiver.track, stream });
      this.#emit('track', {
        participant: info.participant, kind: info.kind, track: receiver.track, stream, mid,
        source: info.source,
      });
    }
  }
}
