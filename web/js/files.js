// Files sent through the room, end to end encrypted: sealed application messages
// (docs/PROTOCOL.md "Files"). No DOM here: call.js feeds it what arrives and gives it
// `seal`; app.js renders the transfers it reports.
//
//   {"type":"file-offer","id":<16 bytes b64>,"name":"…","mime":"…","size":n,"chunk":c,
//    "sha256":<32 bytes b64>}                                     sender → to ("*" or one)
//   {"type":"file-chunk","id":…,"index":i,"data":<b64 of bytes i·c … min(size, (i+1)·c)>}
//   {"type":"file-ack","id":…,"next":k}        receiver → sender: it holds chunks 0 … k−1;
//                                              next = chunks only after the SHA-256 matched
//   {"type":"file-cancel","id":…,"reason":"…"}  either way; ends the transfer for that pair
//
// Every message is a sealed envelope (AES-256-GCM under k_room, its own replay counter),
// so each chunk is authenticated and in order per sender; this layer adds what a receiver
// needs to refuse a chunk that does not belong: the transfer id and sender, the index it
// expects next, the exact length, and the whole file's SHA-256 at the end.
//
// Pacing (PROTOCOL.md "Limits"): a sender has at most `window` chunks beyond the slowest
// receiver's acknowledgement in flight (6 × ~58 KiB on the wire: below the server's 1 MiB
// per-socket queue), and sends at most one chunk every `paceMs` (60 ms: ~17 messages/s,
// a third of the per-socket rate limit). A receiver acks every `ackEvery` chunks.

import { b64, unb64 } from "./roomcrypto.js";

export const MiB = 1024 * 1024;
/** The largest file a page sends or accepts: it is held in memory on both sides. */
export const MAX_FILE_BYTES = 25 * MiB;
/** Bytes per chunk: its JSON (base64 data) stays under the 48 KiB sealed ciphertext cap. */
export const CHUNK_BYTES = 32768;
export const MIN_CHUNK_BYTES = 1024;
export const DEFAULTS = Object.freeze({
  window: 6, // chunks in flight beyond the slowest receiver's ack
  ackEvery: 3, // a receiver acks every this many chunks
  paceMs: 60, // at least this long between two chunks of a sender
  stallMs: 10000, // no progress for this long ends a transfer ("stalled")
  maxIncoming: 2, // transfers a page receives at once; more are refused ("busy")
});
const MAX_NAME = 200;
const ID_BYTES = 16;

/** Why a transfer ended, as the page says it (the id is what travels in file-cancel). */
export const REASONS = Object.freeze({
  cancelled: "cancelled",
  "hash-mismatch": "refused: the received file's SHA-256 does not match the offer (a chunk was altered)",
  "bad-chunk": "refused: a chunk was missing, out of order or malformed",
  "too-big": `refused: larger than the ${MAX_FILE_BYTES / MiB} MB limit`,
  busy: "refused: the receiver is already receiving other files",
  stalled: "interrupted: no progress for 10 seconds",
  left: "interrupted: the other side left the call",
  disconnected: "interrupted: the connection to the server was lost",
});

export class FileError extends Error {
  constructor(id, message) {
    super(message);
    this.name = "FileError";
    this.id = id;
  }
}

const sha256 = async (data) => new Uint8Array(await crypto.subtle.digest("SHA-256", data));
const equalBytes = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const hex = (bytes) => [...bytes].map((x) => x.toString(16).padStart(2, "0")).join("");

/** A file name that is safe to show and to offer as a download name. */
export function cleanName(name) {
  // eslint-disable-next-line no-control-regex
  const text = String(name ?? "").replace(/[\u0000-\u001f\u007f/\\]/g, "_").trim().slice(0, MAX_NAME);
  return text || "file";
}

function decodeBytes(text, size = null) {
  try {
    const out = unb64(text);
    return size === null || out.length === size ? out : null;
  } catch {
    return null;
  }
}

/** A checked offer, or null: receivers refuse anything else ("bad-offer", not answered). */
export function parseOffer(msg) {
  const { id, name, size, chunk, sha256: hash, mime } = msg ?? {};
  if (typeof id !== "string" || decodeBytes(id, ID_BYTES) === null) return null;
  if (typeof name !== "string" || !Number.isSafeInteger(size) || size < 1) return null;
  if (!Number.isSafeInteger(chunk) || chunk < MIN_CHUNK_BYTES || chunk > CHUNK_BYTES) return null;
  const digest = typeof hash === "string" ? decodeBytes(hash, 32) : null;
  if (digest === null) return null;
  const type = typeof mime === "string" && mime.length <= 100 && /^[\w.+-]+\/[\w.+-]+$/.test(mime)
    ? mime : "application/octet-stream";
  return { id, name: cleanName(name), size, chunk, chunks: Math.ceil(size / chunk), sha256: digest, mime: type };
}

/**
 * The transfers of one session. `seal(to, obj)` seals and sends (SignalingClient.seal);
 * `self` is this page's participant id; `members()` the ids of the other members now.
 * Each transfer is reported with an `update` event (detail: its public view, `view()`).
 */
export class FileTransfers extends EventTarget {
  constructor({ seal, self, members, options = {} }) {
    super();
    this.seal = seal;
    this.self = self;
    this.members = members;
    this.opt = { ...DEFAULTS, ...options };
    this.outgoing = new Map(); // id → transfer
    this.incoming = new Map(); // `${sender} ${id}` → transfer
    this.ignored = 0; // chunks, acks and cancels that belong to no transfer of ours
    this.closed = false;
  }

  /** Every transfer of this session, oldest first. */
  list() {
    return [...this.outgoing.values(), ...this.incoming.values()]
      .sort((a, b) => a.started - b.started).map((t) => view(t));
  }

  /**
   * Offer `data` (Uint8Array) to `to` ("*": every member now) and send it; resolves with the
   * transfer's view once the offer is sealed (the chunks follow; `update` events report
   * them). Throws FileError: "empty", "too-big", "no-recipients".
   */
  async send(to, { name, mime = "application/octet-stream", data }) {
    if (this.closed) throw new FileError("disconnected", REASONS.disconnected);
    if (data.length === 0) throw new FileError("empty", "the file is empty: nothing to send");
    if (data.length > MAX_FILE_BYTES) {
      throw new FileError("too-big", `${cleanName(name)} is ${(data.length / MiB).toFixed(1)} MB: files are limited to ${MAX_FILE_BYTES / MiB} MB`);
    }
    const recipients = to === "*" ? this.members() : [to];
    if (recipients.length === 0) throw new FileError("no-recipients", "nobody else is in the call");
    const id = b64(crypto.getRandomValues(new Uint8Array(ID_BYTES)));
    const digest = await sha256(data);
    const chunk = CHUNK_BYTES;
    const t = {
      id, direction: "out", peer: to, name: cleanName(name), mime, size: data.length, chunk,
      chunks: Math.ceil(data.length / chunk), sha256: digest, data, state: "active", reason: null,
      started: Date.now(), sent: 0,
      receivers: new Map(recipients.map((r) => [r, { next: 0, state: "active", reason: null, progressAt: Date.now() }])),
      wake: null,
    };
    this.outgoing.set(id, t);
    await this.seal(to, { type: "file-offer", id, name: t.name, mime, size: t.size, chunk, sha256: b64(digest) });
    this.#update(t);
    t.finished = this.#pump(t).catch((err) => this.#end(t, "failed", "disconnected", String(err?.message ?? err)));
    return view(t);
  }

  /** Stop a transfer of ours, either way; the other side is told (file-cancel). */
  cancel(id) {
    const out = this.outgoing.get(id);
    if (out && out.state === "active") {
      this.#end(out, "cancelled", "cancelled");
      this.seal(out.peer, { type: "file-cancel", id, reason: "cancelled" }).catch(() => {});
      return true;
    }
    for (const t of this.incoming.values()) {
      if (t.id === id && t.state === "active") {
        this.#end(t, "cancelled", "cancelled");
        this.seal(t.peer, { type: "file-cancel", id, reason: "cancelled" }).catch(() => {});
        return true;
      }
    }
    return false;
  }

  /** A member left: transfers from it end, and it stops counting as a receiver. */
  memberLeft(pid) {
    for (const t of this.incoming.values()) if (t.peer === pid && t.state === "active") this.#end(t, "failed", "left");
    for (const t of this.outgoing.values()) {
      const r = t.receivers.get(pid);
      if (r && r.state === "active") this.#receiverEnded(t, r, "failed", "left");
    }
  }

  /** The session is over (socket lost, leave): every active transfer ends. */
  close(reason = "disconnected") {
    this.closed = true;
    for (const t of [...this.outgoing.values(), ...this.incoming.values()]) {
      if (t.state === "active") this.#end(t, "failed", reason);
    }
  }

  /**
   * A sealed message from `from` (already authenticated by the envelope). Returns true if
   * it was a file message (handled or ignored here), false if it is not ours.
   */
  async onMessage(from, msg) {
    if (typeof msg?.type !== "string" || !msg.type.startsWith("file-")) return false;
    if (this.closed) return true;
    switch (msg.type) {
      case "file-offer": await this.#onOffer(from, msg); break;
      case "file-chunk": await this.#onChunk(from, msg); break;
      case "file-ack": this.#onAck(from, msg); break;
      case "file-cancel": this.#onCancel(from, msg); break;
      default: this.ignored += 1;
    }
    return true;
  }

  // -- sending ------------------------------------------------------------------------------

  #active(t) {
    return [...t.receivers.values()].filter((r) => r.state === "active");
  }

  // Wait until `ready()` or nothing is left to wait for; receivers that made no progress
  // for stallMs are given up ("stalled") and told so.
  async #waitFor(t, ready) {
    for (;;) {
      if (t.state !== "active" || this.#active(t).length === 0 || ready()) return;
      const now = Date.now();
      const oldest = Math.min(...this.#active(t).map((r) => r.progressAt));
      const left = oldest + this.opt.stallMs - now;
      if (left <= 0) {
        for (const [pid, r] of t.receivers) {
          if (r.state === "active" && r.progressAt + this.opt.stallMs <= now) {
            this.#receiverEnded(t, r, "failed", "stalled");
            this.seal(pid, { type: "file-cancel", id: t.id, reason: "stalled" }).catch(() => {});
          }
        }
        continue;
      }
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        t.wake = () => { clearTimeout(timer); resolve(); };
      });
      t.wake = null;
    }
  }

  async #pump(t) {
    let last = 0;
    for (let i = 0; i < t.chunks; i++) {
      const slowest = () => Math.min(...this.#active(t).map((r) => r.next));
      await this.#waitFor(t, () => i < slowest() + this.opt.window);
      if (t.state !== "active") return;
      if (this.#active(t).length === 0) return this.#finish(t);
      const wait = last + this.opt.paceMs - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (t.state !== "active") return;
      const data = t.data.subarray(i * t.chunk, Math.min(t.size, (i + 1) * t.chunk));
      await this.seal(t.peer, { type: "file-chunk", id: t.id, index: i, data: b64(data) });
      last = Date.now();
      t.sent = i + 1;
    }
    await this.#waitFor(t, () => this.#active(t).every((r) => r.next === t.chunks));
    if (t.state === "active") this.#finish(t);
  }

  #finish(t) {
    const results = [...t.receivers.values()];
    if (results.some((r) => r.state === "done")) return this.#end(t, "done", null);
    this.#end(t, "failed", results.find((r) => r.reason)?.reason ?? "stalled");
  }

  #receiverEnded(t, r, state, reason) {
    r.state = state;
    r.reason = reason;
    this.#update(t);
    t.wake?.();
  }

  #onAck(from, msg) {
    const t = this.outgoing.get(msg.id);
    const r = t?.receivers.get(from);
    if (!r || r.state !== "active" || !Number.isSafeInteger(msg.next) || msg.next < r.next || msg.next > t.sent) {
      this.ignored += 1;
      return;
    }
    if (msg.next > r.next || msg.next === 0) r.progressAt = Date.now();
    r.next = msg.next;
    if (r.next === t.chunks) r.state = "done";
    this.#update(t);
    t.wake?.();
  }

  #onCancel(from, msg) {
    const reason = typeof msg.reason === "string" && msg.reason in REASONS ? msg.reason : "cancelled";
    const out = this.outgoing.get(msg.id);
    const r = out?.receivers.get(from);
    if (r && r.state === "active") return this.#receiverEnded(out, r, reason === "cancelled" ? "cancelled" : "failed", reason);
    const t = this.incoming.get(`${from} ${msg.id}`);
    if (t && t.state === "active") return this.#end(t, reason === "cancelled" ? "cancelled" : "failed", reason);
    this.ignored += 1;
  }

  // -- receiving ----------------------------------------------------------------------------

  async #onOffer(from, msg) {
    const offer = parseOffer(msg);
    if (offer === null || this.incoming.has(`${from} ${offer.id}`)) {
      this.ignored += 1;
      return;
    }
    const t = {
      ...offer, direction: "in", peer: from, state: "active", reason: null, started: Date.now(),
      next: 0, bytes: 0, pieces: [], data: null, timer: 0,
    };
    this.incoming.set(`${from} ${offer.id}`, t);
    const busy = [...this.incoming.values()].filter((x) => x.state === "active").length > this.opt.maxIncoming;
    const refuse = offer.size > MAX_FILE_BYTES ? "too-big" : busy ? "busy" : null;
    if (refuse) {
      this.#end(t, "failed", refuse);
      await this.seal(from, { type: "file-cancel", id: offer.id, reason: refuse });
      return;
    }
    this.#arm(t);
    this.#update(t);
    await this.seal(from, { type: "file-ack", id: offer.id, next: 0 });
  }

  #arm(t) {
    clearTimeout(t.timer);
    t.timer = setTimeout(() => {
      if (t.state !== "active") return;
      this.#end(t, "failed", "stalled");
      this.seal(t.peer, { type: "file-cancel", id: t.id, reason: "stalled" }).catch(() => {});
    }, this.opt.stallMs);
  }

  async #onChunk(from, msg) {
    const t = this.incoming.get(`${from} ${msg.id}`);
    if (!t || t.state !== "active") {
      this.ignored += 1; // not offered to us, over, or another sender's id
      return;
    }
    const expected = Math.min(t.chunk, t.size - t.next * t.chunk);
    const data = msg.index === t.next && typeof msg.data === "string" ? decodeBytes(msg.data, expected) : null;
    if (data === null) {
      this.#end(t, "failed", "bad-chunk");
      await this.seal(from, { type: "file-cancel", id: t.id, reason: "bad-chunk" });
      return;
    }
    t.pieces.push(data);
    t.next += 1;
    t.bytes += data.length;
    this.#arm(t);
    if (t.next < t.chunks) {
      this.#update(t);
      if (t.next % this.opt.ackEvery === 0) await this.seal(from, { type: "file-ack", id: t.id, next: t.next });
      return;
    }
    const whole = new Uint8Array(t.size);
    let at = 0;
    for (const piece of t.pieces) {
      whole.set(piece, at);
      at += piece.length;
    }
    t.pieces = [];
    if (!equalBytes(await sha256(whole), t.sha256)) {
      this.#end(t, "failed", "hash-mismatch");
      await this.seal(from, { type: "file-cancel", id: t.id, reason: "hash-mismatch" });
      return;
    }
    t.data = whole;
    this.#end(t, "done", null);
    await this.seal(from, { type: "file-ack", id: t.id, next: t.chunks });
  }

  // -- both ---------------------------------------------------------------------------------

  #end(t, state, reason, detail = null) {
    if (t.state !== "active") return;
    clearTimeout(t.timer);
    t.state = state;
    t.reason = reason;
    t.detail = detail;
    if (t.direction === "in" && state !== "done") t.pieces = [];
    if (t.direction === "out") {
      for (const r of t.receivers.values()) if (r.state === "active") { r.state = state; r.reason = reason; }
      t.data = null; // the sender's copy is not needed any more
    }
    this.#update(t);
    t.wake?.();
  }

  #update(t) {
    this.dispatchEvent(new CustomEvent("update", { detail: view(t) }));
  }
}

/** What a page shows of a transfer (no file bytes except a finished download's `data`). */
export function view(t) {
  const base = {
    id: t.id, direction: t.direction, peer: t.peer, name: t.name, mime: t.mime, size: t.size,
    chunks: t.chunks, state: t.state, reason: t.reason, sha256: hex(t.sha256),
    message: t.reason ? (REASONS[t.reason] ?? t.reason) : null,
  };
  if (t.direction === "in") return { ...base, bytes: t.bytes, data: t.state === "done" ? t.data : null };
  const receivers = Object.fromEntries([...t.receivers].map(([pid, r]) => [pid, { next: r.next, state: r.state, reason: r.reason }]));
  const active = [...t.receivers.values()].filter((r) => r.state !== "failed" && r.state !== "cancelled");
  const acked = active.length ? Math.min(...active.map((r) => r.next)) : 0;
  return { ...base, bytes: Math.min(t.size, acked * t.chunk), receivers };
}
