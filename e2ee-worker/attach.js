// Page-side helper for the sealroom frame encryption worker (worker.js beside it).
//
//   import { E2ee, rtcConfiguration } from '/e2ee-worker/attach.js';
//   const e2ee = new E2ee();                                // one worker per page
//   const pc = new RTCPeerConnection(rtcConfiguration({ iceServers }, e2ee.api));
//   const key = await e2ee.setSendKey(myIndex);             // {sender, generation, step, key}
//   await e2ee.addTrack(pc, track, { streams: [stream] });  // encrypted before it is sent
//   pc.ontrack = ({ receiver }) => e2ee.attachReceiver(receiver, participantId);
//
// Feature detection: the standard RTCRtpScriptTransform when the browser has it,
// else Chromium's createEncodedStreams() (which needs `encodedInsertableStreams:
// true` in the RTCPeerConnection configuration — rtcConfiguration() adds it).
// One worker serves every track of the page, so its one frame counter covers
// all of them (FORMAT.md §7).

/** 'script' (RTCRtpScriptTransform), 'streams' (createEncodedStreams) or null. */
export function detectApi() {
  if (typeof RTCRtpScriptTransform === 'function') return 'script';
  if (typeof RTCRtpSender !== 'undefined' && 'createEncodedStreams' in RTCRtpSender.prototype) {
    return 'streams';
  }
  return null;
}

/** The RTCPeerConnection configuration `config` with what `api` needs. */
export function rtcConfiguration(config = {}, api = detectApi()) {
  return api === 'streams' ? { ...config, encodedInsertableStreams: true } : { ...config };
}

/** Restrict a transceiver to the codecs the frame format carries: VP8, Opus (no RED). */
export function preferCodecs(transceiver, kind) {
  if (typeof transceiver.setCodecPreferences !== 'function') return;
  const caps = RTCRtpReceiver.getCapabilities(kind)?.codecs ?? [];
  const wanted = kind === 'video' ? ['video/vp8', 'video/rtx'] : ['audio/opus'];
  const codecs = caps.filter((c) => wanted.includes(c.mimeType.toLowerCase()));
  if (codecs.length > 0) transceiver.setCodecPreferences(codecs);
}

export class E2ee extends EventTarget {
  /**
   * @param {{api?: 'script'|'streams', workerUrl?: string|URL}} options
   * Events: 'decryptFailure' {participant, count, reasons}, 'keySwitched'
   * {sender, generation, step}; event.detail carries the worker's message.
   */
  constructor({ api = detectApi(), workerUrl = new URL('./worker.js', import.meta.url) } = {}) {
    super();
    if (api !== 'script' && api !== 'streams') throw new Error('no encoded-transform API in this browser');
    this.api = api;
    this.worker = new Worker(workerUrl, { type: 'module', name: 'sealroom-e2ee' });
    this.nextId = 1;
    this.waiting = new Map();
    this.worker.onmessage = ({ data }) => {
      const pending = this.waiting.get(data?.id);
      if (pending !== undefined) {
        this.waiting.delete(data.id);
        if (data.type === 'error') pending.reject(new Error(data.error));
        else pending.resolve(data);
      } else if (data?.type) {
        this.dispatchEvent(new CustomEvent(data.type, { detail: data }));
      }
    };
  }

  /** Send one message to the worker and wait for its reply. */
  request(message) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ ...message, id });
    });
  }

  /** The worker draws a fresh sending key; returns it for distribution. */
  setSendKey(sender, generation = 0) {
    return this.request({ type: 'setSendKey', sender, generation });
  }

  /**
   * Install a participant's key: {participant, sender, generation, step, key}. Resolves
   * with `receiveKeySet`, or `receiveKeyRefused {reason}` when the worker's key policy
   * refuses it (FORMAT.md §6a).
   */
  setReceiveKey(entry) {
    const { participant, sender, generation, step, key } = entry;
    return this.request({ type: 'setReceiveKey', participant, sender, generation, step, key });
  }

  ratchet() {
    return this.request({ type: 'ratchet' });
  }

  rotate() {
    return this.request({ type: 'rotate' });
  }

  switchKey() {
    return this.request({ type: 'switchKey' });
  }

  removeParticipant(participant) {
    return this.request({ type: 'removeParticipant', participant });
  }

  /** A new signaling session (a rejoin): the worker forgets every receive key and record. */
  newSession() {
    return this.request({ type: 'newSession' });
  }

  counters() {
    return this.request({ type: 'getCounters' });
  }

  /** Encrypt everything `sender` sends. Call before a track is attached to it. */
  attachSender(sender, kind) {
    this.#attach(sender, { operation: 'encrypt', kind });
  }

  /** Decrypt what `receiver` gets from `participant`. Call in the 'track' event. */
  attachReceiver(receiver, participant) {
    this.#attach(receiver, { operation: 'decrypt', kind: receiver.track.kind, participant });
  }

  /**
   * Add `track` to `pc` so that no frame of it ever leaves unencrypted: the
   * transceiver is created without a track, the transform is set, and only then
   * is the track attached with replaceTrack().
   */
  async addTrack(pc, track, { streams = [], direction = 'sendrecv' } = {}) {
    const transceiver = pc.addTransceiver(track.kind, { direction, streams });
    preferCodecs(transceiver, track.kind);
    this.attachSender(transceiver.sender, track.kind);
    await transceiver.sender.replaceTrack(track);
    return transceiver;
  }

  #attach(senderOrReceiver, options) {
    if (this.api === 'script') {
      senderOrReceiver.transform = new RTCRtpScriptTransform(this.worker, options);
    } else {
      const { readable, writable } = senderOrReceiver.createEncodedStreams();
      this.worker.postMessage({ type: 'attach', ...options, readable, writable }, [readable, writable]);
    }
  }

  /** Stop the worker; its keys go with it. */
  close() {
    this.worker.terminate();
    for (const { reject } of this.waiting.values()) reject(new Error('closed'));
    this.waiting.clear();
  }
}
