// Browser signaling client: the twin of peers/client.py (docs/PROTOCOL.md).
//
// The password and every key derived from it stay in this object. The server sees only the
// admission public key, a signature over its challenge, and sealed envelopes.
//
//   const sig = await SignalingClient.connect("/ws");
//   sig.addEventListener("sealed", (e) => console.log(e.detail.sender, e.detail.json()));
//   await sig.join("my-room", "password");
//   await sig.seal("*", { type: "chat", text: "hi" });
//
// Events (CustomEvent, payload in .detail):
//   sealed         {sender, to, epoch, seq, payload: Uint8Array, json()}  authenticated envelope
//   rejected       {reason, sender}  envelope dropped (replay, failed authentication), or a
//                  membership event refused (rejoin, index-reused, not-a-member); counted in .refused
//   member-joined  {id, index}   member-left {id, index, reason}   lock {locked, lock_at, ...}
//   error          {id, message, ref}         a non-fatal typed error from the server
//   going-away     {reason, retry_after}      the server is shutting down (PROTOCOL.md, Other
//                  messages); it closes the socket (1001) after its drain grace
//   message        any other server message (sfu-offer, speaker, turn, ...)
//
// Resuming (PROTOCOL.md): every join sends a fresh resume key; `.resume` then holds
// {room, cred, expires, seed}, refreshed by the server's `resume` messages. Pass it to the
// next session's join (`{resume}`) to get back into a locked room, or one a restart lost.
//   close          {code, reason}

import {
  EnvelopeHeader, KdfParams, ReplayGuard, b64, newResumeKey, openEnvelope, passwordKey,
  roomKeys, seal, signJoin, unb64,
} from "./roomcrypto.js";

export const PROTOCOL_VERSION = 2;

export class ServerError extends Error {
  constructor(id, message) {
    super(`${id}: ${message}`);
    this.name = "ServerError";
    this.id = id;
    this.serverMessage = message;
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export class SignalingClient extends EventTarget {
  #ws;
  #keys = null;
  #replay = new ReplayGuard(); // never forgets a sender: ids are not reused in a room
  #seenIds = new Set(); // every participant id and sender index of this session (neither
  #seenIndexes = new Set(); // is reused in a room): the twin of peers/client.py's seen_*
  #waiters = [];
  #seq = 0;
  #sending = Promise.resolve(); // the last seal's send: the next one waits for it
  #opening = Promise.resolve(); // envelopes are opened one at a time, in arrival order

  constructor(ws) {
    super();
    this.#ws = ws;
    this.origin = globalThis.location?.origin ?? "";
    this.conn = null;
    this.nonce = null;
    this.room = null;
    this.id = null;
    this.index = null;
    this.epoch = 0;
    this.members = new Map(); // participant id → sender index
    this.refused = {}; // reason → count of envelopes and membership events refused
    this.joined = null;
    this.kdf = null; // KdfParams of the room, as this session joined it
    this.resume = null; // {room, cred, expires, seed}: this membership's resume credential
    this.goingAway = null; // the server's going-away message, once sent
    ws.addEventListener("message", (ev) => this.#onFrame(ev.data));
    ws.addEventListener("close", (ev) => {
      const detail = { code: ev.code, reason: ev.reason };
      for (const w of this.#waiters.splice(0)) w.reject(new ServerError("closed", `socket closed (${ev.code} ${ev.reason})`));
      this.dispatchEvent(new CustomEvent("close", { detail }));
    });
  }

  /** Open the socket (a path like "/ws" is resolved against the page) and await the challenge. */
  static async connect(url = "/ws") {
    const abs = new URL(url, globalThis.location?.href);
    abs.protocol = abs.protocol === "https:" ? "wss:" : abs.protocol === "http:" ? "ws:" : abs.protocol;
    const ws = new WebSocket(abs);
    const client = new SignalingClient(ws);
    await client.#next((m) => m.type === "challenge", 10000);
    return client;
  }

  get connected() {
    return this.#ws.readyState === WebSocket.OPEN;
  }

  send(msg) {
    this.#ws.send(JSON.stringify({ v: PROTOCOL_VERSION, ...msg }));
  }

  close(code = 1000) {
    this.#ws.close(code);
  }

  // Resolve with the next server message that `match`es; an `error` answering `ref` rejects.
  #next(match, timeoutMs = 15000, ref = null) {
    return new Promise((resolve, reject) => {
      const waiter = { match, ref, resolve, reject };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new ServerError("timeout", "no answer from the server"));
      }, timeoutMs);
      waiter.resolve = (m) => { clearTimeout(timer); resolve(m); };
      waiter.reject = (e) => { clearTimeout(timer); reject(e); };
      this.#waiters.push(waiter);
    });
  }

  #onFrame(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg.type === "challenge") {
      this.conn = msg.conn;
      this.nonce = unb64(msg.nonce);
    }
    if (msg.type === "error") {
      const waiter = this.#waiters.find((w) => w.ref !== null && w.ref === msg.ref);
      if (waiter) {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        waiter.reject(new ServerError(msg.id, msg.message));
        return;
      }
    }
    const waiter = this.#waiters.find((w) => w.match(msg));
    if (waiter) {
      this.#waiters = this.#waiters.filter((w) => w !== waiter);
      waiter.resolve(msg);
    }
    switch (msg.type) {
      case "challenge":
      case "joined":
      case "room-info":
        return;
      case "resume": // a refreshed credential for the same membership (same key)
        if (this.resume && typeof msg.cred === "string" && Number.isFinite(msg.expires)) {
          this.resume = { ...this.resume, cred: msg.cred, expires: msg.expires };
        }
        return;
      case "going-away":
        this.goingAway = msg;
        this.dispatchEvent(new CustomEvent("going-away", { detail: msg }));
        return;
      case "sealed":
        this.#opening = this.#opening.then(() => this.#open(msg));
        return;
      case "member-joined": { // ids and indices are never reused in a room (PROTOCOL.md)
        const why = typeof msg.id !== "string" || !Number.isInteger(msg.index) ? "malformed"
          : this.#seenIds.has(msg.id) ? "rejoin" : this.#seenIndexes.has(msg.index) ? "index-reused" : null;
        if (why !== null) return this.#refuse(why, msg.id);
        this.#remember(msg.id, msg.index);
        this.members.set(msg.id, msg.index);
        break;
      }
      case "member-left":
        if (!this.members.delete(msg.id)) return this.#refuse("not-a-member", msg.id);
        break;
    }
    const known = ["member-joined", "member-left", "lock", "error"];
    this.dispatchEvent(new CustomEvent(known.includes(msg.type) ? msg.type : "message", { detail: msg }));
  }

  #refuse(reason, sender) {
    this.refused[reason] = (this.refused[reason] ?? 0) + 1;
    this.dispatchEvent(new CustomEvent("rejected", { detail: { reason, sender } }));
  }

  #remember(id, index) {
    this.#seenIds.add(id);
    this.#seenIndexes.add(index);
  }

  async #open(msg) {
    const reject = (reason) => this.#refuse(reason, msg.from);
    if (!this.#keys) return reject("not-joined");
    if (msg.to !== "*" && msg.to !== this.id) return reject("not-for-me");
    let header;
    try {
      header = new EnvelopeHeader({ room: this.room, epoch: msg.epoch, sender: msg.from, to: msg.to, seq: msg.seq });
    } catch {
      return reject("invalid");
    }
    if (!this.#replay.check(header.sender, header.seq)) return reject("replay");
    let payload;
    try {
      payload = await openEnvelope(this.#keys.kRoom, header, unb64(msg.nonce), unb64(msg.ct));
    } catch {
      return reject("invalid");
    }
    // A later envelope may have been accepted while this one was being opened.
    if (!this.#replay.check(header.sender, header.seq)) return reject("replay");
    this.#replay.commit(header.sender, header.seq);
    const detail = {
      sender: header.sender, to: header.to, epoch: header.epoch, seq: header.seq, payload,
      json: () => JSON.parse(dec.decode(payload)),
    };
    this.dispatchEvent(new CustomEvent("sealed", { detail }));
  }

  async roomInfo(room) {
    this.send({ type: "room-info", room });
    return this.#next((m) => m.type === "room-info" && m.room === room, 15000, "room-info");
  }

  /**
   * Derive the room keys from the password and enter (or create) the room. An existing room's
   * parameters are checked (KdfParams.fromJson: not weaker than the defaults, not above the
   * ceiling) and, given `expectKdf` (a rejoin), must equal it: otherwise ServerError
   * "kdf-changed", before anything is derived. A room this join creates gets `kdf`, else
   * `expectKdf` (the room is gone, e.g. the server restarted: its members, rejoining, agree on
   * the salt), else the default cost with a fresh random salt. A lost creation race (the room
   * appeared after room-info, with another creator's salt: wrong-password) is retried once as
   * a plain join.
   */
  async join(room, password, { kdf = null, expectKdf = null, resume = null, keyCache = null } = {}) {
    if (resume && resume.room !== room) resume = null;
    const once = (r) => this.#joinOnce(room, password, kdf, expectKdf, r, keyCache);
    try {
      return await once(resume);
    } catch (err) {
      if (!(err instanceof ServerError)) throw err;
      if (err.creationRaceLost) return once(resume);
      // An expired credential: once more without it, as a newcomer would join.
      if (err.id === "resume-expired") return once(null);
      throw err;
    }
  }

  // `keyCache` ({} owned by the caller, who holds the password anyway): the keys derived for
  // (room, params) are kept there, so a rejoin with the same parameters skips Argon2id.
  async #deriveKeys(password, params, room, keyCache) {
    if (keyCache?.keys && keyCache.room === room && keyCache.params?.equals(params)) return keyCache.keys;
    const K = await passwordKey(password, params);
    const keys = await roomKeys(K, room);
    K.fill(0);
    if (keyCache) Object.assign(keyCache, { room, params, keys });
    return keys;
  }

  async #joinOnce(room, password, kdf, expectKdf, resume, keyCache) {
    const info = await this.roomInfo(room);
    let params;
    if (info.exists) {
      params = KdfParams.fromJson(info.kdf);
      if (expectKdf && !params.equals(expectKdf)) {
        throw new ServerError("kdf-changed",
          "the room's key-derivation parameters changed since this session joined it: refused");
      }
    } else { // a room gone (expired, server restarted) comes back with the remembered salt
      params = kdf ?? expectKdf ?? KdfParams.generate();
    }
    const keys = await this.#deriveKeys(password, params, room, keyCache);
    const mine = await newResumeKey(); // a fresh key for this membership ("Resuming")
    const signed = [this.origin, room, this.nonce, this.conn, mine.publicKey];
    const sig = await signJoin(keys.admSeed, ...signed);
    const msg = { type: "join", room, sig: b64(sig), resume_pk: b64(mine.publicKey) };
    if (resume) msg.resume = { cred: resume.cred, sig: b64(await signJoin(resume.seed, ...signed)) };
    if (!info.exists) msg.create = { kdf: params.toJson(), adm_pk: b64(keys.admPk) };
    this.send(msg);
    let joined;
    try {
      joined = await this.#next((m) => m.type === "joined", 15000, "join");
    } catch (err) {
      if (err instanceof ServerError && err.id === "wrong-password" && msg.create) err.creationRaceLost = true;
      throw err;
    }
    this.#keys = keys;
    this.kdf = params;
    const cred = joined.resume;
    this.resume = cred && typeof cred.cred === "string"
      ? { room, cred: cred.cred, expires: cred.expires, seed: mine.seed } : null;
    this.room = room;
    this.id = joined.id;
    this.index = joined.index;
    this.members = new Map(joined.members.map((m) => [m.id, m.index]));
    for (const [id, index] of [[joined.id, joined.index], ...this.members]) this.#remember(id, index);
    this.joined = joined;
    return joined;
  }

  /** Seal `payload` (an object, sent as JSON, or a Uint8Array) for `to` ("*" = everyone). */
  async seal(to, payload) {
    if (!this.#keys) throw new Error("join first");
    const data = payload instanceof Uint8Array ? payload : enc.encode(JSON.stringify(payload));
    const seq = ++this.#seq;
    const header = new EnvelopeHeader({ room: this.room, epoch: this.epoch, sender: this.id, to, seq });
    const sealing = seal(this.#keys.kRoom, header, data);
    // Sent in seq order even when encryptions finish out of order (many seals at once: file
    // chunks, acks, keys): the server refuses a seq not above the socket's last (`replay`).
    const sent = this.#sending.then(async () => {
      const { nonce, ciphertext } = await sealing;
      this.send({ type: "seal", to, epoch: header.epoch, seq, nonce: b64(nonce), ct: b64(ciphertext) });
    });
    this.#sending = sent.catch(() => {});
    await sent;
    return seq;
  }

  allowJoining(seconds = 120) {
    this.send({ type: "allow-joining", seconds });
  }

  leave() {
    if (this.connected) this.send({ type: "leave" });
  }
}
