// The video grid: one tile per person (you first), with name, mute state, active-speaker
// highlight, a visible warning when someone's frames fail to decrypt, a raised-hand badge
// and reactions floating over the sender's tile.

const FAILURE_SHOW_MS = 3000; // the worker reports at most once a second per participant

const PAUSED = {
  bandwidth: "paused — low bandwidth",
  "last-n": "paused — not among the recent speakers",
};

const REASONS = {
  "unknown-kid": "no key yet",
  "auth-failed": "authentication failed",
  replay: "replayed frames",
  "wrong-sender": "key of another participant",
  "wrong-codec": "unsupported codec",
};

export class Tiles {
  /**
   * @param {HTMLElement} grid
   * @param {{selfName: string, onVideoSize?: (id: string, height: number) => void}} options
   * onVideoSize: a remote tile's video is now `height` device pixels high (0: hidden or
   * zero-size), from a ResizeObserver, and again whenever the tile gets a video track;
   * the call tells the SFU (docs/SFU.md "Browsers": which simulcast layer it forwards).
   */
  constructor(grid, { selfName, onVideoSize = null }) {
    this.grid = grid;
    this.tiles = new Map(); // id → {el, video, label, stream, name, state, failure}
    this.speaker = null;
    this.sink = ""; // the chosen speaker's deviceId ("": the default)
    this.onVideoSize = onVideoSize;
    this.heights = new Map(); // remote id → the video's last rendered height (device pixels)
    this.resizes = typeof ResizeObserver === "function" && onVideoSize
      ? new ResizeObserver((entries) => {
        for (const e of entries) {
          const id = e.target.closest?.(".tile")?.dataset.id;
          if (id && this.tiles.get(id)?.video === e.target) this.#measure(id);
        }
      })
      : null;
    this.add("self", `${selfName} (you)`);
  }

  get size() {
    return this.tiles.size;
  }

  add(id, name) {
    if (this.tiles.has(id)) {
      if (name) this.setName(id, name);
      return this.tiles.get(id);
    }
    const el = document.createElement("figure");
    el.className = "tile no-video";
    el.dataset.id = id;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    if (id === "self") {
      video.muted = true; // never play your own microphone back
      el.classList.add("self");
    }
    const initials = document.createElement("div");
    initials.className = "initials";
    const label = document.createElement("figcaption");
    const warn = document.createElement("div");
    warn.className = "decrypt-warning";
    warn.hidden = true;
    const notice = document.createElement("div");
    notice.className = "paused-notice";
    notice.hidden = true;
    el.append(video, initials, label, warn, notice);
    this.grid.append(el);
    const tile = { el, video, label, initials, warn, notice, stream: new MediaStream(), name: null,
      state: { audio: true, video: true }, failure: null, failureTimer: 0, paused: null };
    video.srcObject = tile.stream;
    this.tiles.set(id, tile);
    if (id !== "self") this.#sinkOf(tile);
    if (id !== "self" && this.resizes) {
      this.resizes.observe(video);
      video.addEventListener("resize", () => this.#measure(id)); // the picture's own size came or changed
    }
    this.setName(id, name);
    this.#layout();
    return tile;
  }

  remove(id) {
    const tile = this.tiles.get(id);
    if (!tile || id === "self") return;
    clearTimeout(tile.failureTimer);
    this.resizes?.unobserve(tile.video);
    this.heights.delete(id);
    tile.video.srcObject = null;
    tile.el.remove();
    this.tiles.delete(id);
    this.#layout();
  }

  clear() {
    for (const tile of this.tiles.values()) {
      this.resizes?.unobserve(tile.video);
      tile.video.srcObject = null;
      clearTimeout(tile.failureTimer);
    }
    this.tiles.clear();
    this.heights.clear();
    this.grid.replaceChildren();
  }

  setName(id, name) {
    const tile = this.tiles.get(id) ?? this.add(id, name);
    tile.name = name || tile.name || "joining…";
    tile.initials.textContent = (tile.name.match(/\p{L}|\p{N}/u)?.[0] ?? "?").toUpperCase();
    this.#caption(tile);
  }

  setLocal({ audio, video, stream }) {
    const tile = this.tiles.get("self");
    if (!tile) return;
    tile.state = { audio, video };
    if (stream) {
      const vt = stream.getVideoTracks().filter((t) => t.readyState === "live");
      for (const t of tile.stream.getVideoTracks()) if (!vt.includes(t)) tile.stream.removeTrack(t);
      for (const t of vt) if (!tile.stream.getTracks().includes(t)) tile.stream.addTrack(t);
    }
    tile.el.classList.toggle("no-video", !video);
    this.#caption(tile);
  }

  addTrack(id, track) {
    const tile = this.tiles.get(id) ?? this.add(id, null);
    for (const old of tile.stream.getTracks()) if (old.kind === track.kind) tile.stream.removeTrack(old);
    tile.stream.addTrack(track);
    if (track.kind === "video") {
      tile.el.classList.toggle("no-video", !tile.state.video);
      // The size may have been measured before this track (and its MID) existed.
      if (id !== "self" && this.heights.has(id)) this.onVideoSize?.(id, this.heights.get(id));
    }
    tile.video.play().catch(() => {}); // autoplay may wait for a gesture; the join click is one
  }

  endTrack(id, kind) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    for (const t of tile.stream.getTracks()) if (t.kind === kind) tile.stream.removeTrack(t);
    if (kind === "video") tile.el.classList.add("no-video");
  }

  setState(id, state) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    tile.state = { audio: state.audio, video: state.video };
    tile.el.classList.toggle("no-video", !state.video || tile.stream.getVideoTracks().length === 0);
    this.#caption(tile);
  }

  setSpeaker(id) {
    if (this.speaker === id) return;
    this.tiles.get(this.speaker)?.el.classList.remove("speaking");
    this.speaker = id;
    this.tiles.get(id)?.el.classList.add("speaking");
  }

  /**
   * `id`'s screen share ("self" for ours) as a large presenter tile, `${id}:screen`, with
   * the cameras in a strip below it (#layout); its picture is letterboxed, never cropped.
   */
  addScreen(id, track, name = null) {
    const sid = `${id}:screen`;
    const owner = name ?? this.tiles.get(id)?.name ?? null;
    const tile = this.tiles.get(sid) ?? this.add(sid, owner ? `${owner.replace(/ \(you\)$/, "")}'s screen` : "screen");
    tile.el.classList.add("screen");
    tile.el.classList.remove("self");
    tile.video.muted = true;
    this.addTrack(sid, track);
    tile.el.classList.remove("no-video");
    this.#layout();
  }

  /** Play every remote tile on speaker `deviceId` (HTMLMediaElement.setSinkId), now and later. */
  setSink(deviceId) {
    this.sink = deviceId || "";
    for (const [id, tile] of this.tiles) if (id !== "self") this.#sinkOf(tile);
  }

  #sinkOf(tile) {
    if (this.sink && typeof tile.video.setSinkId === "function") tile.video.setSinkId(this.sink).catch(() => {});
  }

  removeScreen(id) {
    this.remove(`${id}:screen`);
  }

  /** `id`'s raised hand: its place in the queue (1 = first), or null when it is down. */
  setHand(id, place) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    tile.hand = place;
    let badge = tile.el.querySelector(":scope > .hand-badge");
    tile.el.classList.toggle("hand-up", place !== null);
    if (place === null) return badge?.remove();
    if (!badge) {
      badge = document.createElement("div");
      badge.className = "hand-badge";
      tile.el.append(badge);
    }
    badge.textContent = `✋ ${place}`;
    badge.title = `${tile.name} raised a hand (${place} in the queue)`;
  }

  /** A reaction floats over `id`'s tile for `ms` (at most 5 at once per tile). */
  showReaction(id, emoji, ms) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    const shown = tile.el.querySelectorAll(":scope > .reaction");
    if (shown.length >= 5) shown[0].remove();
    const el = document.createElement("div");
    el.className = "reaction";
    el.textContent = emoji;
    el.style.left = `${20 + Math.random() * 50}%`;
    tile.el.append(el);
    tile.reaction = emoji;
    setTimeout(() => {
      el.remove();
      if (!tile.el.querySelector(":scope > .reaction")) tile.reaction = null;
    }, ms);
  }

  /** The SFU stopped sending `id`'s video to us (`reason`), or resumed it (null). */
  setPaused(id, reason) {
    const tile = this.tiles.get(id) ?? this.add(id, null);
    tile.paused = reason ?? null;
    tile.notice.textContent = reason ? (PAUSED[reason] ?? `paused — ${reason}`) : "";
    tile.notice.hidden = !reason;
    tile.el.classList.toggle("paused", Boolean(reason));
  }

  /** Frames from `id` fail to decrypt: say so on the tile, by name, until they stop. */
  decryptFailure(id, reasons) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    const why = Object.keys(reasons ?? {}).map((r) => REASONS[r] ?? r).join(", ");
    tile.failure = why || "unknown";
    tile.warn.textContent = `Can't decrypt ${tile.name}'s media (${tile.failure})`;
    tile.warn.hidden = false;
    tile.el.classList.add("undecryptable");
    clearTimeout(tile.failureTimer);
    tile.failureTimer = setTimeout(() => {
      tile.failure = null;
      tile.warn.hidden = true;
      tile.el.classList.remove("undecryptable");
    }, FAILURE_SHOW_MS);
  }

  /** A small RGB picture of what a tile's video shows right now (tests compare it). */
  sample(id, width = 16, height = 12) {
    const video = this.tiles.get(id)?.video;
    if (!video || video.videoWidth === 0) return null;
    const canvas = new OffscreenCanvas(width, height);
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(video, 0, 0, width, height);
    const rgba = ctx.getImageData(0, 0, width, height).data;
    const rgb = [];
    for (let i = 0; i < rgba.length; i += 4) rgb.push(rgba[i], rgba[i + 1], rgba[i + 2]);
    return rgb;
  }

  snapshot() {
    return [...this.tiles.entries()].map(([id, t]) => ({
      id, name: t.name, speaking: this.speaker === id, failure: t.failure, paused: t.paused,
      screen: t.el.classList.contains("screen"),
      hand: t.hand ?? null, reaction: t.reaction ?? null,
      audio: t.state.audio, video: t.state.video,
      tracks: t.stream.getTracks().map((x) => x.kind).sort(),
      width: t.video.videoWidth, height: t.video.videoHeight,
    }));
  }

  /**
   * How many lines of `id`'s video the screen can show: the element's height, or more when
   * `object-fit: cover` scales a picture that is narrower than the tile to the tile's width
   * (its height then overflows and is cropped), in device pixels; 0 when hidden.
   */
  #measure(id) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    const { clientWidth: w, clientHeight: h, videoWidth: vw, videoHeight: vh } = tile.video;
    const shown = w > 0 && h > 0 ? Math.max(h, vw > 0 && vh > 0 ? (w * vh) / vw : 0) : 0;
    const height = Math.round(shown * (globalThis.devicePixelRatio || 1));
    if (this.heights.get(id) === height) return;
    this.heights.set(id, height);
    this.onVideoSize?.(id, height);
  }

  #caption(tile) {
    const off = [tile.state.audio ? null : "muted", tile.state.video ? null : "camera off"].filter(Boolean);
    tile.label.textContent = off.length ? `${tile.name} · ${off.join(", ")}` : tile.name;
  }

  #layout() {
    // A screen share: the presenter tile on top, every camera in one strip below it.
    const screens = [...this.tiles.values()].filter((t) => t.el.classList.contains("screen")).length;
    this.grid.classList.toggle("presenting", screens > 0);
    if (screens > 0) {
      this.grid.style.setProperty("--cols", String(Math.max(1, this.tiles.size - screens)));
      this.grid.style.setProperty("--rows", "1");
      return;
    }
    // Columns for a roughly square grid: 1, 2, 2, 2, 3, 3, 3, 3, 3, 4, …
    const n = Math.max(1, this.tiles.size);
    const cols = Math.ceil(Math.sqrt(n));
    this.grid.style.setProperty("--cols", String(cols));
    this.grid.style.setProperty("--rows", String(Math.ceil(n / cols)));
  }
}
