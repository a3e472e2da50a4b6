// One person's presence in a sealed room: signaling, media keys, media through the SFU,
// and automatic reconnect. The page (app.js) only renders what this object reports.
//
//   const call = new Call({ room, password, name, stream });
//   call.addEventListener("track", (e) => …);        // see the event list below
//   await call.start();                               // throws ServerError (wrong-password, …)
//   call.leave();
//
// Events (CustomEvent, payload in .detail):
//   member       {id, name, joined: bool}       someone joined (name may arrive later) or left
//   name         {id, name}                     a signed hello announced a display name
//   track        {participant, kind, track, stream, source}   remote media became active
//                (source 'camera', or 'screen' for a screen share: its own stream)
//   track-ended  {participant, kind, source}
//   screen       {active, reason?}              this page's own screen share began or ended
//   device       {kind, deviceId}               setDevice() switched the camera or microphone
//   speaker      {participant, level}
//   stream-state {participant, kind, state: 'paused'|'active', reason}   the SFU paused a
//                stream for this viewer ('bandwidth': its link is full; 'last-n')
//   peer-state   {participant, audio, video}    a member muted/unmuted (sealed 'state')
//   chat         {from, text}
//   hands        {list: [{id, since}]}          raised hands in raising order ("self": ours)
//   reaction     {participant, emoji}           a reaction to show briefly ("self": ours)
//   file         a transfer's view (files.js view()): offered, progress, done or failed
//   security-code {code}
//   decrypt-failure {participant, reasons}       frames from `participant` failed to decrypt
//   lock         {locked, lock_at, open_until, opened_by}
//   connection   {state: 'connected'|'reconnecting'|'lost', reason?, attempt?}
//                ('lost' reason 'media-unreachable': MEDIA_ATTEMPTS sessions in a row joined
//                but their media never connected; reconnect.js)
//
// Why one object: a reconnect replaces the socket, the participant id, the sender index,
// the key exchange and both PeerConnections at once, but keeps the camera, the microphone
// and the E2EE worker (whose frame counter must never restart, FORMAT.md §7).

import { E2ee } from "/e2ee-worker/attach.js";
import { FileTransfers } from "./files.js";
import { Hands, SignalGate, SignalSender, parseSignal } from "./hands.js";
import { MediaSession } from "./media.js";
import { KeyManager } from "./mediakeys.js";
import { ReconnectPlan } from "./reconnect.js";
import { ServerError, SignalingClient } from "./signaling.js";

/** Join errors after which trying again cannot help ("kdf-changed" is the client's own). */
const FATAL = new Set(["wrong-password", "room-locked", "room-full", "bad-room", "too-many-attempts",
  "kdf-changed", "bad-resume"]);
// docs/PROTOCOL.md "Reconnecting": the waits before each attempt are reconnect.js's schedule;
// the first is the server's going-away.retry_after when it sent one (at most 30 s).
const MAX_RETRY_AFTER_MS = 30000;
// A loss the server itself announced (sfu-error, or close 1013 after its SFU worker died)
// means the server is up: the first attempt goes at once, spread over 250 ms so a room's
// members do not all arrive in the same instant (docs/SFU.md "Faults").
const announcedRetryMs = () => Math.random() * 250;

export class Call extends EventTarget {
  /**
   * @param {{room: string, password: string, name: string, stream: MediaStream|null,
   *          relayOnly?: boolean, wsUrl?: string, simulcast?: boolean|null}} options
   * simulcast: publish the camera as three layers (media.js SIMULCAST_LAYERS) or one;
   * null: the browser's default (media.js: layers where the browser keeps L1T3 on them).
   */
  constructor({ room, password, name, stream = null, relayOnly = false, wsUrl = "/ws", simulcast = null }) {
    super();
    this.simulcast = simulcast;
    this.room = room;
    this.name = name;
    this.stream = stream;
    this.relayOnly = relayOnly;
    this.wsUrl = wsUrl;
    this.#password = password;
    this.e2ee = new E2ee();
    this.e2ee.addEventListener("decryptFailure", ({ detail }) => {
      this.#emit("decrypt-failure", { participant: detail.participant, reasons: detail.reasons });
    });
    this.signaling = null;
    this.keys = null;
    this.media = null;
    this.screenTrack = null; // the screen this call shares (startScreenShare), kept across rejoins
    this.devices = { audio: null, video: null }; // deviceIds chosen in the call (setDevice)
    this.names = new Map(); // participant id → display name (from signed hellos)
    // Hands and reactions (hands.js): ours is kept across rejoins and told to every member
    // whose hello verifies; the others' are per session.
    this.hands = new Hands();
    this.signals = new SignalSender((to, obj) => this.signaling?.seal(to, obj) ?? Promise.resolve());
    this.signalGate = new SignalGate();
    this.files = null; // this session's FileTransfers (files.js)
    this.left = false;
    this.sendGeneration = 0; // generation of our media key: +1 at every rotation
    this.reconnects = 0; // sessions after the first (a lost socket, a server restart)
    this.#generation = 0;
  }

  #password;
  #kdf = null; // the room's KdfParams as this call joined it: a rejoin must find the same salt
  #reconnect = null; // the token of the reconnect loop in progress
  #resume = null; // the last session's resume credential: a locked room takes us back
  #retryAfterMs = null; // the server's going-away.retry_after, for the next reconnect
  #keyCache = {}; // keys derived for this room's parameters: a rejoin skips Argon2id
  #generation; // bumps on every (re)connect so late events of an old session are ignored
  #plan = new ReconnectPlan(); // the rejoin schedule, across sessions whose media never connected
  #mediaState = "none"; // this session's media: 'none' (no PC yet), 'unconnected', 'connected'

  get id() {
    return this.signaling?.id ?? null;
  }

  /** Connect, join (throws ServerError), start the key exchange and the media. */
  async start() {
    const gen = ++this.#generation;
    this.#mediaState = "none";
    const sig = await SignalingClient.connect(this.wsUrl);
    try {
      const joined = await sig.join(this.room, this.#password, { expectKdf: this.#kdf, resume: this.#resume, keyCache: this.#keyCache });
      if (gen !== this.#generation || this.left) {
        sig.close();
        return;
      }
      this.signaling = sig;
      this.#kdf = sig.kdf; // the same on every rejoin: a room gone is made again with it
      this.#resume = sig.resume ?? this.#resume; // this membership's: the next rejoin uses it
      this.#wireSignaling(sig, gen);
      for (const m of joined.members) this.#emit("member", { id: m.id, name: null, joined: true });
      this.#emit("lock", joined.lock);
      // The MediaSession must exist before the next message is read: the SFU's first
      // subscriber offer may follow `joined` at once (media.js).
      if (joined.sfu) this.#startMedia(sig, joined, gen);
      await this.#startKeys(sig, gen);
      if (this.media && this.stream) await this.media.publish(this.stream);
      if (this.media && this.screenTrack?.readyState === "live") {
        // a rejoin shares the screen again, unless the room has its screen shares by now
        await this.#shareOn(this.media, this.screenTrack).catch((err) => this.#screenEnded(String(err?.message ?? err)));
      }
      this.#emit("connection", { state: "connected" });
      return joined;
    } catch (err) {
      sig.close();
      // This session was lost while it started (its media failed, its socket closed) and
      // #lost already rejoins: that loop owns the call now, this start() has nothing to report
      // (the page shows the room with its "reconnecting" banner, not a join error).
      // After leave() there is nothing to report either.
      if (this.left || (gen !== this.#generation && this.#reconnect !== null)) return null;
      throw err;
    }
  }

  #wireSignaling(sig, gen) {
    const live = () => gen === this.#generation && !this.left;
    const files = this.#startFiles(sig, live);
    sig.addEventListener("member-joined", ({ detail }) => {
      if (live()) this.#emit("member", { id: detail.id, name: this.names.get(detail.id) ?? null, joined: true });
    });
    sig.addEventListener("member-left", ({ detail }) => {
      if (!live()) return;
      this.names.delete(detail.id);
      files.memberLeft(detail.id);
      this.signalGate.forget(detail.id);
      if (this.hands.remove(detail.id)) this.#emitHands();
      this.e2ee.removeParticipant(detail.id).catch(() => {});
      this.#emit("member", { id: detail.id, name: null, joined: false, reason: detail.reason });
    });
    sig.addEventListener("lock", ({ detail }) => live() && this.#emit("lock", detail));
    sig.addEventListener("sealed", ({ detail }) => {
      if (!live()) return;
      let msg;
      try {
        msg = detail.json();
      } catch {
        return; // not JSON: not ours to show
      }
      if (typeof msg?.type === "string" && msg.type.startsWith("file-")) {
        files.onMessage(detail.sender, msg).catch((err) => console.warn("sealroom: file message", err));
        return;
      }
      const signal = parseSignal(msg);
      if (signal) {
        this.#onSignal(detail.sender, signal);
        return;
      }
      if (msg?.type === "chat" && typeof msg.text === "string") {
        this.#emit("chat", { from: detail.sender, text: msg.text.slice(0, 2000) });
      } else if (msg?.type === "state") {
        this.#emit("peer-state", { participant: detail.sender, audio: msg.audio !== false, video: msg.video !== false });
      }
    });
    sig.addEventListener("going-away", ({ detail }) => {
      if (!live()) return;
      const seconds = Number(detail.retry_after);
      this.#retryAfterMs = Number.isFinite(seconds) && seconds >= 0
        ? Math.min(seconds * 1000, MAX_RETRY_AFTER_MS) : null;
      sig.close(1000); // the server is stopping: leave at once, the close below reconnects
    });
    sig.addEventListener("close", ({ detail }) => {
      if (!live()) return;
      if (detail.code === 1013) this.#retryAfterMs ??= announcedRetryMs(); // media-failed, told by the server
      this.#lost(`signaling closed (${detail.reason || detail.code})`);
    });
  }

  async #startKeys(sig, gen) {
    const keys = new KeyManager({ signaling: sig, e2ee: this.e2ee, name: this.name });
    this.keys = keys;
    const live = () => gen === this.#generation && !this.left;
    keys.addEventListener("hello", ({ detail }) => {
      if (!live()) return;
      this.names.set(detail.id, detail.name);
      this.#emit("name", { id: detail.id, name: detail.name });
      this.#sendState(detail.id); // tell the newcomer whether we are muted
      if (this.signals.handRaised) sig.seal(detail.id, this.signals.handMessage()).catch(() => {});
    });
    keys.addEventListener("security-code", ({ detail }) => live() && this.#emit("security-code", detail));
    keys.addEventListener("rotated", ({ detail }) => {
      if (live()) this.sendGeneration = detail.generation; // after a leave (PROTOCOL.md, Media keys)
    });
    keys.onKeyFrameNeeded = () => live() && this.media?.requestKeyFrame();
    this.names.set(sig.id, this.name);
    await keys.start();
  }

  #startMedia(sig, joined, gen) {
    const iceServers = (joined.ice_servers ?? []).map((s) => ({ ...s }));
    const media = new MediaSession({
      signaling: sig, e2ee: this.e2ee, iceServers,
      iceTransportPolicy: this.relayOnly ? "relay" : "all", simulcast: this.simulcast,
    });
    this.media = media;
    const live = () => gen === this.#generation && !this.left;
    for (const type of ["track", "track-ended", "speaker", "stream-state"]) {
      media.addEventListener(type, ({ detail }) => live() && this.#emit(type, detail));
    }
    // Whether this session's media ever got through decides how its loss counts (reconnect.js).
    media.addEventListener("state", ({ detail }) => {
      if (!live()) return;
      if (detail.state === "connected") this.#mediaState = "connected";
      else if (this.#mediaState === "none") this.#mediaState = "unconnected";
    });
    media.addEventListener("failed", ({ detail }) => {
      if (!live()) return;
      if (detail.pc === null) this.#retryAfterMs ??= announcedRetryMs(); // the SFU's own sfu-error
      this.#lost(`media ${detail.pc ?? ""} failed: ${detail.reason ?? ""}`.trim());
    });
  }

  /**
   * `participant`'s video is shown `height` device pixels high (0: hidden; null: no limit):
   * the SFU forwards no simulcast layer taller than that (media.js setVideoHeight). Without
   * a received video of `participant` now, nothing is sent: its tile says it again when
   * the track comes (tiles.js).
   */
  setVideoHeight(participant, height) {
    const media = this.media;
    if (!media) return;
    for (const [mid, info] of media.active) {
      if (info.participant === participant && info.kind === "video" && info.source !== "screen") {
        media.setVideoHeight(mid, height);
      }
    }
  }

  /**
   * Share a screen (docs/SFU.md "Screen sharing"): `track`, or what getDisplayMedia gives
   * (the browser asks which screen or window). Throws when the browser or the SFU refuses
   * (`screen-limit: …` when the room has its screen shares already); the browser's own
   * "Stop sharing" ends it like stopScreenShare(). Emits `screen` {active, reason?}.
   */
  async startScreenShare(track = null) {
    if (!this.media) throw new Error("no media session");
    if (this.screenTrack) return;
    let own = null;
    if (track === null) {
      const display = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { max: 15 } }, audio: false });
      track = own = display.getVideoTracks()[0];
    }
    try {
      await this.#shareOn(this.media, track);
    } catch (err) {
      own?.stop();
      throw err;
    }
    this.screenTrack = track;
    track.addEventListener("ended", () => {
      if (this.screenTrack === track) this.stopScreenShare().catch(() => {});
    });
    this.#emit("screen", { active: true, track });
  }

  /**
   * The screen share on `media`: a page that joined without camera and microphone has no
   * pub PC yet, and gets one first, with its camera and microphone m-lines empty (either
   * can still be started later without renegotiation, media.js publish()).
   */
  async #shareOn(media, track) {
    if (media.pub === null) await media.publish(this.stream ?? new MediaStream());
    await media.startScreen(track);
  }

  /** Stop sharing the screen; the SFU removes it from everyone's view. */
  async stopScreenShare() {
    const track = this.screenTrack;
    if (!track) return;
    this.#screenEnded(null);
    await this.media?.stopScreen();
  }

  #screenEnded(reason) {
    const track = this.screenTrack;
    this.screenTrack = null;
    track?.stop();
    this.#emit("screen", { active: false, reason });
  }

  #startFiles(sig, live) {
    const files = new FileTransfers({
      seal: (to, obj) => sig.seal(to, obj), self: sig.id, members: () => [...sig.members.keys()],
    });
    this.files = files;
    // After a loss the session is over (live() is false) but its transfers still end with a
    // reason the page must show: close() reports them while `this.files` is still this one.
    files.addEventListener("update", ({ detail }) => (live() || this.files === files) && this.#emit("file", detail));
    return files;
  }

  // A hand or reaction from `sender`, within its receive limit (hands.js RECEIVE_LIMITS).
  #onSignal(sender, signal) {
    if (!this.signalGate.accept(sender, signal.kind)) return;
    if (signal.kind === "reaction") this.#emit("reaction", { participant: sender, emoji: signal.emoji });
    else if (this.hands.set(sender, signal.raised, signal.at)) this.#emitHands();
  }

  #emitHands() {
    this.#emit("hands", { list: this.hands.list() });
  }

  get handRaised() {
    return this.signals.handRaised;
  }

  /** Raise or lower our hand; false when rate-limited (hands.js SEND_LIMITS). */
  async raiseHand(raised) {
    if (!this.signaling?.id) return false;
    const ok = await this.signals.setHand(raised);
    if (ok) {
      if (raised) this.hands.set("self", true, this.signals.raisedAt);
      else this.hands.remove("self");
      this.#emitHands();
    }
    return ok;
  }

  /** Send a reaction (one of hands.js REACTIONS) to everyone; false when rate-limited. */
  async react(emoji) {
    if (!this.signaling?.id) return false;
    const ok = await this.signals.react(emoji);
    if (ok) this.#emit("reaction", { participant: "self", emoji });
    return ok;
  }

  /**
   * Send a file (a File or Blob) to `to` ("*": everyone now in the call), end to end
   * encrypted in sealed chunks (files.js); throws FileError ("too-big", "empty", …).
   */
  async sendFile(to, file) {
    if (!this.files) throw new Error("not in a call");
    const data = new Uint8Array(await file.arrayBuffer());
    return this.files.send(to, { name: file.name ?? "file", mime: file.type || "application/octet-stream", data });
  }

  cancelFile(id) {
    return this.files?.cancel(id) ?? false;
  }

  /** Seal a chat message to everyone. */
  async chat(text) {
    await this.signaling?.seal("*", { type: "chat", text });
  }

  allowJoining(seconds = 120) {
    this.signaling?.allowJoining(seconds);
  }

  /** Mute/unmute: the microphone track keeps running but sends silence (as in most apps). */
  setMicrophone(on) {
    for (const t of this.stream?.getAudioTracks() ?? []) t.enabled = on;
    this.#sendState("*");
  }

  /**
   * Use another camera (`kind` 'video') or microphone ('audio') by its deviceId: the new
   * track replaces the old one in the sender that already has the encrypt transform, so
   * nothing is renegotiated and no frame leaves unencrypted; others see at most the gap
   * until its first key frame. The microphone's mute state is kept; with the camera off,
   * the choice is remembered for when it goes on.
   */
  async setDevice(kind, deviceId) {
    if (kind !== "audio" && kind !== "video") throw new Error(`no ${kind} device`);
    this.devices[kind] = deviceId || null;
    const old = (this.stream?.getTracks() ?? []).filter((t) => t.kind === kind && t.readyState === "live");
    if (!this.stream || old.length === 0) return;
    const fresh = await navigator.mediaDevices.getUserMedia({ [kind]: deviceId ? { deviceId: { exact: deviceId } } : true });
    const track = fresh.getTracks().find((t) => t.kind === kind);
    if (kind === "audio") track.enabled = old.every((t) => t.enabled);
    await this.media?.replaceTrack(kind, track);
    for (const t of old) {
      this.stream.removeTrack(t);
      t.stop();
    }
    this.stream.addTrack(track);
    this.#emit("device", { kind, deviceId: track.getSettings?.().deviceId ?? deviceId ?? null });
  }

  /** Camera off stops the track (the camera light goes out); on asks for a new one. */
  async setCamera(on) {
    if (!this.stream) return;
    if (on) {
      const fresh = await navigator.mediaDevices.getUserMedia({ video: this.devices.video ? { deviceId: { exact: this.devices.video } } : true });
      const track = fresh.getVideoTracks()[0];
      for (const old of this.stream.getVideoTracks()) this.stream.removeTrack(old);
      this.stream.addTrack(track);
      await this.media?.replaceTrack("video", track);
    } else {
      for (const t of this.stream.getVideoTracks()) {
        t.stop();
        this.stream.removeTrack(t);
      }
      await this.media?.replaceTrack("video", null);
    }
    this.#sendState("*");
  }

  get microphoneOn() {
    return (this.stream?.getAudioTracks() ?? []).some((t) => t.enabled && t.readyState === "live");
  }

  get cameraOn() {
    return (this.stream?.getVideoTracks() ?? []).some((t) => t.readyState === "live");
  }

  #sendState(to) {
    if (!this.signaling?.connected || !this.signaling.id) return;
    this.signaling.seal(to, { type: "state", audio: this.microphoneOn, video: this.cameraOn }).catch(() => {});
  }

  /** Leave for good: tell the server, close the media, stop camera and microphone. */
  leave() {
    if (this.left) return;
    this.left = true;
    this.#reconnect = null;
    this.#generation++;
    this.#teardown({ leave: true });
    this.#keyCache = {};
    for (const t of this.stream?.getTracks() ?? []) t.stop(); // the camera light goes off
    this.screenTrack?.stop();
    this.screenTrack = null;
    this.e2ee.close();
  }

  #teardown({ leave }) {
    const sig = this.signaling;
    this.files?.close("disconnected"); // transfers end with a reason, never hang
    this.files = null;
    this.keys?.close();
    this.media?.close();
    this.keys = null;
    this.media = null;
    this.signaling = null;
    if (sig) {
      if (leave) sig.leave();
      sig.close();
    }
  }

  // The socket or a PeerConnection died: drop this session and rejoin, a bounded number of times.
  async #lost(reason) {
    console.warn(`sealroom: connection lost (${reason}); rejoining`);
    const token = {};
    this.#reconnect = token;
    this.#generation++;
    const stale = [...this.names.keys()].filter((id) => id !== this.id);
    this.#resume = this.signaling?.resume ?? this.#resume; // the newest (refreshed) credential
    let retryAfter = this.#retryAfterMs;
    this.#retryAfterMs = null;
    // A PeerConnection that exists but never connected counts, even before its first state change.
    if (this.#mediaState === "none" && (this.media?.pub || this.media?.sub)) this.#mediaState = "unconnected";
    this.#plan.lost(this.#mediaState);
    this.#mediaState = "none";
    this.#teardown({ leave: false });
    // The next session has a new identity, so no key of this one can reach the worker
    // again; the worker's records (FORMAT.md §6a) start over with it.
    this.e2ee.newSession().catch(() => {});
    for (const id of stale) this.#emit("member", { id, name: null, joined: false, reason: "reconnecting" });
    for (const { id } of this.hands.list()) if (id !== "self") this.hands.remove(id);
    this.#emitHands();
    this.names.clear();
    if (this.#plan.giveUp !== null) { // #reconnect stays `token`: any older loop stops
      this.#emit("connection", { state: "lost", reason: this.#plan.giveUp, message: reason });
      return;
    }
    for (let step = this.#plan.next(); step !== null; step = this.#plan.next()) {
      this.#emit("connection", { state: "reconnecting", reason, attempt: step.attempt });
      const wait = retryAfter ?? step.delayMs;
      retryAfter = null;
      await new Promise((r) => setTimeout(r, wait));
      if (this.#reconnect !== token || this.left) return;
      try {
        await this.start();
        if (this.#reconnect === token) this.#reconnect = null;
        this.reconnects += 1;
        return;
      } catch (err) {
        if (this.#reconnect !== token || this.left) return; // a newer loss took over
        if (err instanceof ServerError && FATAL.has(err.id)) {
          this.#emit("connection", { state: "lost", reason: err.id, message: err.serverMessage });
          return;
        }
        reason = String(err.message ?? err);
      }
    }
    if (this.#reconnect === token) this.#emit("connection", { state: "lost", reason });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
