// Media keys: who is in the room (signed hellos), how each sender's frame key reaches every
// member (boxed and signed), and the room security code. The twin of e2ee/mediakeys.py;
// the protocol is docs/PROTOCOL.md "Media keys". tests/vectors/mediakeys.json pins both
// languages.
//
//   const keys = new KeyManager({ signaling, e2ee, name: "Alice" });  // before or after join
//   keys.onKeyFrameNeeded = () => media.requestKeyFrame();
//   keys.addEventListener("security-code", (e) => show(e.detail.code));
//   await signaling.join(room, password);
//   await keys.start();
//
// Every message travels sealed (signaling.seal, k_room). On top of that, each participant
// makes per-session keys: Ed25519 to sign, X25519 to receive boxes (libsodium crypto_box:
// X25519 + XSalsa20-Poly1305), so another password holder can neither read a key sent to
// someone else nor pass off a message as another member's.
//
// Events (CustomEvent, payload in .detail): hello {id, name}; security-code {code};
// key-installed {participant, generation, step}; rotated {generation}; rejected {sender, reason}.
// Sealed messages of other types (chat, ...) are left alone. Key material is never logged.

import sodium from "../vendor/libsodium-wrappers-sumo.mjs";
import { b64, unb64 } from "./roomcrypto.js";

export const MESSAGE_VERSION = 1;
export const MESSAGE_TYPES = Object.freeze(["hello", "media-key", "media-key-ack"]);
const enc = new TextEncoder();
// Labels end with NUL: no label is a prefix of another ("media-key" / "media-key-ack").
const HELLO_LABEL = enc.encode("sealroom/v1/hello\0");
const MEDIA_KEY_LABEL = enc.encode("sealroom/v1/media-key\0");
const ACK_LABEL = enc.encode("sealroom/v1/media-key-ack\0");
const CODE_LABEL = enc.encode("sealroom/v1/security-code\0");

const KEY_SIZE = 32; // Ed25519 seed / public key (RFC 8032 §5.1.5), X25519 keys (RFC 7748 §5)
const SIGNATURE_SIZE = 64; // RFC 8032 §5.1.6
const BOX_NONCE_SIZE = 24; // crypto_box_NONCEBYTES
const BOX_MAC_SIZE = 16; // crypto_box_MACBYTES
const BASE_KEY_SIZE = 32; // e2ee-worker/FORMAT.md §5
export const MAX_NAME_BYTES = 100;
export const MAX_STEP = 0xff; // FORMAT.md §3: at step 255 a sender rotates instead of ratcheting
export const DEBOUNCE_MS = 500;
export const SWITCH_TIMEOUT_MS = 5000;

export class Rejected extends Error {
  constructor(reason) {
    super(reason);
    this.name = "Rejected";
    this.reason = reason;
  }
}

// ------------------------------------------------------------------------------ encodings

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function utf8(text) {
  if (typeof text !== "string" || !text.isWellFormed()) throw new Rejected("malformed");
  return enc.encode(text);
}

/** Length-prefixed field: uint16 big-endian length ‖ bytes (strings as UTF-8). */
export function lp(value) {
  const data = typeof value === "string" ? utf8(value) : value;
  if (!(data instanceof Uint8Array) || data.length > 0xffff) throw new RangeError("bad field");
  return concat(Uint8Array.of(data.length >> 8, data.length & 0xff), data);
}

const u16 = (v) => Uint8Array.of(v >> 8, v & 0xff);

/** label ‖ lp room ‖ lp id ‖ u16 index ‖ lp signPk ‖ lp boxPk ‖ lp name */
export function helloTranscript(room, id, index, signPk, boxPk, name) {
  return concat(HELLO_LABEL, lp(room), lp(id), u16(index), lp(signPk), lp(boxPk), lp(name));
}

/** label ‖ lp room ‖ lp from ‖ lp to ‖ u16 index ‖ u16 generation ‖ u8 step ‖ lp nonce ‖ lp box */
export function mediaKeyTranscript(room, from, to, index, generation, step, nonce, box) {
  return concat(MEDIA_KEY_LABEL, lp(room), lp(from), lp(to), u16(index), u16(generation),
    Uint8Array.of(step), lp(nonce), lp(box));
}

/** label ‖ lp room ‖ lp from ‖ lp to ‖ u16 generation ‖ u8 step ‖ lp nonce */
export function ackTranscript(room, from, to, generation, step, nonce) {
  return concat(ACK_LABEL, lp(room), lp(from), lp(to), u16(generation), Uint8Array.of(step), lp(nonce));
}

function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/**
 * The room security code over every {id, signPk, boxPk}, self included:
 * SHA-256(label ‖ lp room ‖ u16 count ‖ (lp id ‖ lp signPk ‖ lp boxPk)…), members sorted by
 * the UTF-8 bytes of their id; 5 groups of 5 digits (5 bytes big-endian, mod 100000 each).
 */
export async function securityCode(room, members) {
  const sorted = [...members].sort((a, b) => compareBytes(utf8(a.id), utf8(b.id)));
  const parts = [CODE_LABEL, lp(room), u16(sorted.length)];
  for (const m of sorted) parts.push(lp(m.id), lp(m.signPk), lp(m.boxPk));
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", concat(...parts)));
  const groups = [];
  for (let g = 0; g < 5; g++) {
    let value = 0;
    for (let i = 0; i < 5; i++) value = value * 256 + digest[5 * g + i]; // 40 bits: exact
    groups.push(String(value % 100000).padStart(5, "0"));
  }
  return groups.join(" ");
}

// ------------------------------------------------------------------------------ identity

/** Per-session keys: an Ed25519 key pair (signing) and an X25519 key pair (boxes). */
export class Identity {
  #signSk;
  #boxSk;

  constructor(signSk, signPk, boxSk, boxPk) {
    this.#signSk = signSk;
    this.#boxSk = boxSk;
    this.signPk = signPk;
    this.boxPk = boxPk;
    Object.freeze(this);
  }

  /** From a 32-byte Ed25519 seed and a 32-byte X25519 secret key (tests and vectors). */
  static async fromSecrets(signSeed, boxSk) {
    await sodium.ready;
    const sign = sodium.crypto_sign_seed_keypair(signSeed);
    return new Identity(sign.privateKey, sign.publicKey, boxSk.slice(), sodium.crypto_scalarmult_base(boxSk));
  }

  static async generate() {
    await sodium.ready;
    return Identity.fromSecrets(sodium.randombytes_buf(KEY_SIZE), sodium.randombytes_buf(KEY_SIZE));
  }

  /** Ed25519 (RFC 8032 §5.1.6), deterministic. */
  sign(message) {
    return sodium.crypto_sign_detached(message, this.#signSk);
  }

  box(plaintext, nonce, recipientPk) {
    return sodium.crypto_box_easy(plaintext, nonce, recipientPk, this.#boxSk);
  }

  openBox(box, nonce, senderPk) {
    return sodium.crypto_box_open_easy(box, nonce, senderPk, this.#boxSk);
  }
}

function verifySignature(signPk, signature, message) {
  try {
    return sodium.crypto_sign_verify_detached(signature, message, signPk);
  } catch {
    return false;
  }
}

function bytesField(msg, name, size) {
  let value;
  try {
    value = unb64(msg[name]);
  } catch {
    throw new Rejected("malformed");
  }
  if (size !== undefined && value.length !== size) throw new Rejected("malformed");
  return value;
}

function intField(msg, name, max) {
  const value = msg[name];
  if (!Number.isInteger(value) || value < 0 || value > max) throw new Rejected("malformed");
  return value;
}

function checkVersion(msg) {
  if (msg.v !== MESSAGE_VERSION) throw new Rejected("unsupported-version");
}

// ------------------------------------------------------------------------------ messages

export async function makeHello(identity, room, id, index, name) {
  await sodium.ready;
  const sig = identity.sign(helloTranscript(room, id, index, identity.signPk, identity.boxPk, name));
  return {
    type: "hello", v: MESSAGE_VERSION, id, index, name,
    sign_pk: b64(identity.signPk), box_pk: b64(identity.boxPk), sig: b64(sig),
  };
}

/** Check a hello from envelope sender `sender` whose signaling index is `index` → peer. */
export async function verifyHello(msg, room, sender, index) {
  await sodium.ready;
  checkVersion(msg);
  if (msg.id !== sender) throw new Rejected("wrong-sender"); // a hello speaks for its sender only
  if (index === undefined || index === null) throw new Rejected("unknown-member");
  if (intField(msg, "index", 0xffff) !== index) throw new Rejected("wrong-index");
  const name = msg.name;
  if (typeof name !== "string" || utf8(name).length > MAX_NAME_BYTES) throw new Rejected("malformed");
  const signPk = bytesField(msg, "sign_pk", KEY_SIZE);
  const boxPk = bytesField(msg, "box_pk", KEY_SIZE);
  const sig = bytesField(msg, "sig", SIGNATURE_SIZE);
  if (!verifySignature(signPk, sig, helloTranscript(room, sender, index, signPk, boxPk, name))) {
    throw new Rejected("bad-signature");
  }
  return { id: sender, name, index, signPk, boxPk };
}

/** Box `key.key` to `to` (a peer) and sign. `key` = {sender, generation, step, key}. */
export async function makeMediaKey(identity, room, from, to, key, nonce = null) {
  await sodium.ready;
  if (!(key.key instanceof Uint8Array) || key.key.length !== BASE_KEY_SIZE) throw new RangeError("a base key is 32 bytes");
  nonce ??= sodium.randombytes_buf(BOX_NONCE_SIZE);
  const box = identity.box(key.key, nonce, to.boxPk);
  const transcript = mediaKeyTranscript(room, from, to.id, key.sender, key.generation, key.step, nonce, box);
  return {
    type: "media-key", v: MESSAGE_VERSION, index: key.sender, generation: key.generation,
    step: key.step, nonce: b64(nonce), box: b64(box), sig: b64(identity.sign(transcript)),
  };
}

/** Verify and open a media-key from `peer` to `me` → {key: {sender, generation, step, key}, nonce}. */
export async function openMediaKey(msg, identity, room, me, peer) {
  await sodium.ready;
  checkVersion(msg);
  const index = intField(msg, "index", 0xffff);
  const generation = intField(msg, "generation", 0xffff);
  const step = intField(msg, "step", MAX_STEP);
  const nonce = bytesField(msg, "nonce", BOX_NONCE_SIZE);
  const box = bytesField(msg, "box", BASE_KEY_SIZE + BOX_MAC_SIZE);
  const sig = bytesField(msg, "sig", SIGNATURE_SIZE);
  if (index !== peer.index) throw new Rejected("wrong-index"); // only one's own sending key
  const transcript = mediaKeyTranscript(room, peer.id, me, index, generation, step, nonce, box);
  if (!verifySignature(peer.signPk, sig, transcript)) throw new Rejected("bad-signature");
  let key;
  try {
    key = identity.openBox(box, nonce, peer.boxPk);
  } catch {
    throw new Rejected("bad-box");
  }
  return { key: { sender: index, generation, step, key }, nonce };
}

export async function makeAck(identity, room, me, to, generation, step, nonce) {
  await sodium.ready;
  const sig = identity.sign(ackTranscript(room, me, to, generation, step, nonce));
  return { type: "media-key-ack", v: MESSAGE_VERSION, generation, step, nonce: b64(nonce), sig: b64(sig) };
}

/** → {generation, step, nonce} of an ack from `peer` to `me`. */
export async function verifyAck(msg, room, me, peer) {
  await sodium.ready;
  checkVersion(msg);
  const generation = intField(msg, "generation", 0xffff);
  const step = intField(msg, "step", MAX_STEP);
  const nonce = bytesField(msg, "nonce", BOX_NONCE_SIZE);
  const sig = bytesField(msg, "sig", SIGNATURE_SIZE);
  if (!verifySignature(peer.signPk, sig, ackTranscript(room, peer.id, me, generation, step, nonce))) {
    throw new Rejected("bad-signature");
  }
  return { generation, step, nonce };
}

const sameBytes = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const describe = ({ sender, generation, step }) => ({ sender, generation, step });

// ------------------------------------------------------------------------------ protocol

/**
 * Runs the media-keys protocol for the page. `signaling` is a web/js/signaling.js client,
 * `e2ee` an E2ee of e2ee-worker/attach.js (its worker draws and holds the sending key).
 */
export class KeyManager extends EventTarget {
  #signaling;
  #e2ee;
  #identity;
  #debounceMs;
  #switchTimeoutMs;
  #started = false;
  #closed = false;
  #backlog = [];
  #queue = Promise.resolve();
  #listeners = [];
  #current = null; // our sending key {sender, generation, step, key}
  #pending = null; // a rotated key announced but not used yet
  #installed = new Map(); // peer id → newest generation installed: kept for the session
  #waiting = new Map(); // peer id → nonce of the rotated key it must acknowledge
  #acked = null; // resolves the wait for acks
  #debounce = null; // the timer of a rotation that is due
  #again = false; // a member left while a rotated key was pending: rotate once more
  #rotation = 0; // bumped by every rotation: a late switch of an older one does nothing

  constructor({ signaling, e2ee, name = "", identity = null, debounceMs = DEBOUNCE_MS, switchTimeoutMs = SWITCH_TIMEOUT_MS }) {
    super();
    this.#signaling = signaling;
    this.#e2ee = e2ee;
    this.#identity = identity;
    this.name = name;
    this.#debounceMs = debounceMs;
    this.#switchTimeoutMs = switchTimeoutMs;
    this.peers = new Map(); // id → {name, index, signPk, boxPk}
    this.securityCode = "";
    this.refused = {}; // reason → count of the messages refused (the `rejected` events)
    this.onKeyFrameNeeded = null;
    // Listen at once: events that arrive before start() are kept and handled in order then.
    for (const type of ["sealed", "member-joined", "member-left"]) {
      const listener = ({ detail }) => this.#receive(type, detail);
      signaling.addEventListener(type, listener);
      this.#listeners.push([type, listener]);
    }
  }

  get identity() {
    return this.#identity;
  }

  /** After signaling.join(): draw the sending key, say hello, handle what arrived. */
  async start() {
    if (this.#started) return;
    this.#identity ??= await Identity.generate();
    await this.#run(async () => {
      const sig = this.#signaling;
      this.#current = describeKey(await this.#e2ee.setSendKey(sig.index, 0));
      await this.#updateCode();
      await sig.seal("*", await makeHello(this.#identity, sig.room, sig.id, sig.index, this.name));
    });
    this.#started = true;
    for (const [type, detail] of this.#backlog.splice(0)) this.#receive(type, detail);
    await this.#queue;
  }

  close() {
    this.#closed = true;
    clearTimeout(this.#debounce);
    this.#acked?.();
    for (const [type, listener] of this.#listeners) this.#signaling.removeEventListener(type, listener);
    this.#listeners = [];
  }

  // One message at a time, in arrival order: a ratchet finishes before the next key is sent.
  // The returned promise rejects with the task's error; the queue itself goes on.
  #run(task) {
    const next = this.#queue.then(() => (this.#closed ? undefined : task()));
    this.#queue = next.catch((error) => console.error("media keys:", error?.message ?? error));
    return next;
  }

  #spawn(task) {
    this.#run(task).catch(() => {}); // already reported by #run
  }

  #receive(type, detail) {
    if (this.#closed) return;
    if (!this.#started) {
      this.#backlog.push([type, detail]);
      return;
    }
    if (type === "sealed") {
      let body;
      try {
        body = detail.json();
      } catch {
        return;
      }
      if (body === null || typeof body !== "object" || !MESSAGE_TYPES.includes(body.type)) return;
      this.#spawn(() => this.#sealed(detail.sender, detail.to, body).catch((error) => {
        if (!(error instanceof Rejected)) throw error;
        this.refused[error.reason] = (this.refused[error.reason] ?? 0) + 1;
        this.#emit("rejected", { sender: detail.sender, reason: error.reason });
      }));
    } else if (type === "member-joined") {
      this.#spawn(() => this.#memberJoined(detail.id));
    } else if (type === "member-left") {
      this.#spawn(() => this.#memberLeft(detail.id));
    }
  }

  async #sealed(sender, to, body) {
    if (body.type === "hello") return this.#hello(sender, body);
    if (to !== this.#signaling.id) throw new Rejected("not-for-me"); // keys and acks go to one member
    const peer = this.peers.get(sender);
    if (peer === undefined) throw new Rejected("no-hello");
    if (body.type === "media-key") return this.#mediaKey(peer, body);
    return this.#ack(peer, body);
  }

  async #hello(sender, body) {
    const sig = this.#signaling;
    const peer = await verifyHello(body, sig.room, sender, sig.members.get(sender));
    const known = this.peers.get(sender);
    if (known !== undefined) {
      if (!sameBytes(known.signPk, peer.signPk) || !sameBytes(known.boxPk, peer.boxPk)) {
        throw new Rejected("key-changed"); // per-session keys do not change within a session
      }
      return;
    }
    this.peers.set(sender, peer);
    this.#emit("hello", { id: sender, name: peer.name });
    await this.#updateCode();
    await this.#sendKey(peer, this.#current);
    if (this.#pending !== null) this.#waiting.set(sender, await this.#sendKey(peer, this.#pending));
  }

  async #mediaKey(peer, body) {
    const sig = this.#signaling;
    const { key, nonce } = await openMediaKey(body, this.#identity, sig.room, sig.id, peer);
    // A sender distributes each generation once: a replayed or older key is refused here,
    // and the worker refuses it again whatever this page does (FORMAT.md §6a).
    if (key.generation <= (this.#installed.get(peer.id) ?? -1)) throw new Rejected("stale-key");
    const reply = await this.#e2ee.setReceiveKey({ participant: peer.id, ...key });
    if (reply?.type === "receiveKeyRefused") throw new Rejected(reply.reason);
    this.#installed.set(peer.id, key.generation);
    await sig.seal(peer.id, await makeAck(this.#identity, sig.room, sig.id, peer.id, key.generation, key.step, nonce));
    this.#emit("key-installed", { participant: peer.id, generation: key.generation, step: key.step });
  }

  async #ack(peer, body) {
    const sig = this.#signaling;
    const { nonce } = await verifyAck(body, sig.room, sig.id, peer);
    const expected = this.#waiting.get(peer.id);
    if (expected !== undefined && sameBytes(expected, nonce)) {
      this.#waiting.delete(peer.id);
      if (this.#waiting.size === 0) this.#acked?.();
    }
  }

  /** Ratchet (the newcomer cannot read the past) and greet the newcomer (FORMAT.md §5). */
  async #memberJoined(id) {
    const sig = this.#signaling;
    if (this.#current.step >= MAX_STEP && this.#pending !== null) {
      // Step exhausted during a rotation: use the pending key now (every member has been
      // sent it), then ratchet it for the newcomer like any join.
      await this.#e2ee.switchKey();
      await this.#switched();
      this.#current = describeKey(await this.#e2ee.ratchet());
    } else if (this.#current.step >= MAX_STEP) { // a new generation, at once, for all
      const rotated = await this.#e2ee.rotate();
      await this.#e2ee.switchKey();
      this.#current = describeKey(rotated);
      for (const peer of this.peers.values()) await this.#sendKey(peer, this.#current);
    } else {
      this.#current = describeKey(await this.#e2ee.ratchet());
    }
    await sig.seal(id, await makeHello(this.#identity, sig.room, sig.id, sig.index, this.name));
  }

  async #memberLeft(id) {
    this.peers.delete(id); // #installed keeps its entry: the id never comes back
    await this.#e2ee.removeParticipant(id);
    if (this.#waiting.delete(id) && this.#waiting.size === 0) this.#acked?.();
    await this.#updateCode();
    this.#rotateSoon();
  }

  // A leave makes a rotation due DEBOUNCE_MS later; leaves while it is due join it, and a
  // leave never postpones or cancels one: a leave while a rotated key waits for its acks
  // (the departed member may hold that key) gets one more rotation right after the switch.
  // So the key a departed member held stops being used within DEBOUNCE_MS + SWITCH_TIMEOUT_MS
  // of its leave, or twice that plus DEBOUNCE_MS when a rotation was pending.
  #rotateSoon() {
    if (this.#pending !== null) this.#again = true;
    else this.#debounce ??= setTimeout(() => this.#spawn(() => this.#rotate()), this.#debounceMs);
  }

  async #rotate() {
    this.#debounce = null;
    if (this.#pending !== null) return void (this.#again = true);
    const token = ++this.#rotation;
    this.#pending = describeKey(await this.#e2ee.rotate());
    this.#waiting = new Map();
    for (const peer of this.peers.values()) this.#waiting.set(peer.id, await this.#sendKey(peer, this.#pending));
    // Wait for the acks outside the queue (acks are handled in it), then switch in it.
    const acked = new Promise((resolve) => {
      const timer = setTimeout(resolve, this.#switchTimeoutMs);
      this.#acked = () => { clearTimeout(timer); resolve(); };
    });
    if (this.#waiting.size === 0) this.#acked();
    acked.then(() => this.#spawn(() => this.#switch(token)));
  }

  async #switch(token) {
    if (token !== this.#rotation || this.#pending === null) return; // switched already
    await this.#e2ee.switchKey();
    await this.#switched();
  }

  async #switched() {
    this.#current = this.#pending;
    this.#pending = null;
    this.#waiting = new Map();
    this.#acked?.(); // ends the wait (and its timer) if the switch came early (step 255)
    this.#acked = null;
    this.#emit("rotated", { generation: this.#current.generation });
    if (this.#again) {
      this.#again = false;
      this.#rotateSoon();
    }
    try {
      await this.onKeyFrameNeeded?.();
    } catch (error) {
      console.error("media keys: key frame request failed:", error?.message ?? error);
    }
  }

  async #sendKey(peer, key) {
    const sig = this.#signaling;
    const msg = await makeMediaKey(this.#identity, sig.room, sig.id, peer, key);
    await sig.seal(peer.id, msg);
    return unb64(msg.nonce);
  }

  async #updateCode() {
    const sig = this.#signaling;
    const members = [...this.peers.values()];
    members.push({ id: sig.id, signPk: this.#identity.signPk, boxPk: this.#identity.boxPk });
    const code = await securityCode(sig.room, members);
    if (code !== this.securityCode) {
      this.securityCode = code;
      this.#emit("security-code", { code });
    }
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** The worker's sendKey reply → {sender, generation, step, key}. */
function describeKey(reply) {
  return { ...describe(reply), key: reply.key };
}
