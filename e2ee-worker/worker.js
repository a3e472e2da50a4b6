// sealroom frame encryption worker — the file a security reviewer audits.
//
// Specification: FORMAT.md beside this file. Every rule of the format is a line
// here, tagged with the section of FORMAT.md ("F§") and of RFC 9605 (SFrame) it
// implements. One ES module, WebCrypto only, no dependencies, no build step.
//
//   out = C ‖ AES-GCM(key_KID, salt_KID ⊕ CTR, aad = H ‖ kind ‖ C, frame[n:]) ‖ H ‖ len(H)
//
// The pure functions and the two state machines (SendState, ReceiveState) are
// exported so that `node --test` checks them against the same vectors as the
// Python reference (e2ee/sframe.py). The worker entry point at the bottom only
// runs inside a real dedicated worker.

// ---------------------------------------------------------------- constants (F§1)

/** Cipher suite AES_128_GCM_SHA256_128 (RFC 9605 §4.5, §8.1). */
export const CIPHER_SUITE = 0x0004;
/** AEAD.Nk, AEAD.Nn, AEAD.Nt of that suite (RFC 9605 §4.5, Table 4). */
export const NK = 16;
export const NN = 12;
export const NT = 16;
/** CTR is a 64-bit unsigned integer (RFC 9605 §4.3: lengths 1..8 bytes). */
export const CTR_LIMIT = 1n << 64n;
/** An encoded header is 1..17 bytes: config byte + up to 8 KID + 8 CTR bytes. */
export const MAX_HEADER = 17;
/** A sender's previous generation is kept this long after its next one decrypts (F§6a). */
export const GRACE_MS = 2000;
/** Replay window, in counters (F§6, RFC 9605 §7.4, §9.3). */
export const REPLAY_WINDOW = 1024;
/** Frames with a KID whose key has not arrived yet are held this long (F§6). */
export const HOLD_MS = 1000;
/** At most this many frames are held per track while waiting for a key. */
export const HOLD_MAX_FRAMES = 64;
/** Decrypt-failure events go to the page at most this often per participant. */
export const FAILURE_REPORT_MS = 1000;
/** The only codecs the format carries (F§2); other codecs' frames are dropped. */
export const CODECS = Object.freeze({ audio: 'audio/opus', video: 'video/vp8' });
/** The one-byte media kind bound into the AAD (F§2). */
const KIND_BYTE = Object.freeze({ audio: 0x61 /* 'a' */, video: 0x76 /* 'v' */ });

const subtle = globalThis.crypto.subtle;
const utf8 = new TextEncoder();

// ------------------------------------------------------------------ byte helpers

/** Concatenate byte arrays. */
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
}

/** `value` (bigint) as `length` big-endian bytes. */
function bigEndian(value, length) {
  const out = new Uint8Array(length);
  for (let i = length - 1; i >= 0; i--, value >>= 8n) out[i] = Number(value & 0xffn);
  return out;
}

/** Fewest bytes (1..8) holding `value` (RFC 9605 §4.3 "minimum number of bytes"). */
function minimalLength(value) {
  let n = 1;
  while (n < 8 && value >> BigInt(8 * n) !== 0n) n++;
  return n;
}

// --------------------------------------------------------------------- KID (F§3)

/**
 * KID = sender_index (16 bits) << 24 | generation (16 bits) << 8 | step (8 bits).
 * The KID names the sender, so a receiver can check it against the track (F§6).
 */
export function makeKid(sender, generation, step) {
  const ok = isUint(sender, 0xffff) && isUint(generation, 0xffff) && isUint(step, 0xff);
  if (!ok) throw new RangeError('KID field out of range');
  return (BigInt(sender) << 24n) | (BigInt(generation) << 8n) | BigInt(step);
}

/** The inverse of makeKid; null for a KID that no sealroom sender can produce. */
export function splitKid(kid) {
  if (kid < 0n || kid >= 1n << 40n) return null;
  return { sender: Number(kid >> 24n), generation: Number((kid >> 8n) & 0xffffn), step: Number(kid & 0xffn) };
}

function isUint(value, max) {
  return Number.isInteger(value) && value >= 0 && value <= max;
}

// ------------------------------------------------------------ header (RFC 9605 §4.3)

/** Encode KID and CTR (bigints < 2^64) as an SFrame header. RFC 9605 §4.3, Figure 4. */
export function encodeHeader(kid, ctr) {
  if (kid < 0n || kid >= CTR_LIMIT || ctr < 0n || ctr >= CTR_LIMIT) {
    throw new RangeError('KID or CTR out of range');
  }
  let config = 0;
  const tail = [];
  for (const [value, shift] of [[kid, 4], [ctr, 0]]) { // X|KKK for the KID, then Y|CCC for CTR
    if (value < 8n) {
      config |= Number(value) << shift; // X (Y) = 0: the value sits in the 3 bits
    } else {
      const n = minimalLength(value); // X (Y) = 1: the 3 bits hold length − 1, the value follows
      config |= (0x08 | (n - 1)) << shift;
      tail.push(bigEndian(value, n));
    }
  }
  return concat(Uint8Array.of(config), ...tail);
}

/**
 * Decode a header that must span exactly `bytes`. Returns {kid, ctr} or null.
 * Only the canonical (minimal) encoding is accepted — RFC 9605 §4.3 "MUST be
 * encoded with the minimum number of bytes"; F§4: anything else is dropped.
 */
export function decodeHeader(bytes) {
  if (bytes.length < 1 || bytes.length > MAX_HEADER) return null;
  const config = bytes[0];
  let at = 1;
  const field = (extended, bits) => {
    if (!extended) return BigInt(bits);
    const n = bits + 1;
    if (at + n > bytes.length) return null;
    let value = 0n;
    for (let i = 0; i < n; i++) value = (value << 8n) | BigInt(bytes[at + i]);
    at += n;
    return value;
  };
  const kid = field((config & 0x80) !== 0, (config >> 4) & 0x07);
  if (kid === null) return null;
  const ctr = field((config & 0x08) !== 0, config & 0x07);
  if (ctr === null || at !== bytes.length) return null;
  const canonical = encodeHeader(kid, ctr);
  if (canonical.length !== bytes.length || canonical.some((b, i) => b !== bytes[i])) return null;
  return { kid, ctr };
}

// ------------------------------------------------ key schedule (RFC 9605 §4.4.2, F§5)

/** HKDF-SHA256 with an empty salt: HKDF-Expand(HKDF-Extract("", ikm), info, length). */
async function hkdf(ikm, info, length) {
  const key = await subtle.importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  const params = { name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info };
  return new Uint8Array(await subtle.deriveBits(params, key, length * 8));
}

/** Label = text ‖ KID as 8 bytes big-endian ‖ cipher suite as 2 bytes (RFC 9605 §4.4.2). */
function label(text, kid) {
  return concat(utf8.encode(text), bigEndian(kid, 8), bigEndian(BigInt(CIPHER_SUITE), 2));
}

/** sframe_key and sframe_salt of `kid` under `baseKey` (RFC 9605 §4.4.2), as raw bytes. */
export async function deriveKeySalt(baseKey, kid) {
  const key = await hkdf(baseKey, label('SFrame 1.0 Secret key ', kid), NK);
  const salt = await hkdf(baseKey, label('SFrame 1.0 Secret salt ', kid), NN);
  return { key, salt };
}

/** The next step's base key: HKDF-Expand(HKDF-Extract("", base), "SFrame 1.0 Ratchet", 32). F§5. */
export function ratchetKey(baseKey) {
  return hkdf(baseKey, utf8.encode('SFrame 1.0 Ratchet'), 32);
}

/**
 * The AEAD key and salt of one KID, ready for use. The AES key is imported
 * non-extractable; only the base key is ever exported (for distribution).
 */
export async function importKid(baseKey, kid) {
  const { key, salt } = await deriveKeySalt(baseKey, kid);
  const aead = await subtle.importKey('raw', key, 'AES-GCM', false, ['encrypt', 'decrypt']);
  return { kid, aead, salt };
}

// ------------------------------------------------------- AEAD (RFC 9605 §4.4.3, §4.4.4)

/** nonce = sframe_salt XOR CTR, CTR big-endian on AEAD.Nn bytes (RFC 9605 §4.4.3). */
export function makeNonce(salt, ctr) {
  const ctrBytes = bigEndian(ctr, NN);
  return salt.map((b, i) => b ^ ctrBytes[i]);
}

/** The AES-GCM parameters of one frame: its nonce, aad = header ‖ metadata, a full tag. */
function gcm(keys, header, ctr, metadata) {
  return { name: 'AES-GCM', iv: makeNonce(keys.salt, ctr), additionalData: concat(header, metadata), tagLength: NT * 8 };
}

/** RFC 9605 §4.4.3 encrypt(): returns {header, ciphertext}. */
export async function seal(keys, ctr, metadata, plaintext) {
  const header = encodeHeader(keys.kid, ctr);
  const ciphertext = await subtle.encrypt(gcm(keys, header, ctr, metadata), keys.aead, plaintext);
  return { header, ciphertext: new Uint8Array(ciphertext) };
}

/** RFC 9605 §4.4.4 decrypt(): the plaintext, or null when the tag does not verify. */
export async function open(keys, header, ctr, metadata, ciphertext) {
  try {
    return new Uint8Array(await subtle.decrypt(gcm(keys, header, ctr, metadata), keys.aead, ciphertext));
  } catch {
    return null; // OperationError: authentication failed
  }
}

// ------------------------------------------------------------- frame layout (F§2)

/**
 * n, the bytes left in clear at the front: Opus 1 (the TOC byte); VP8 10 for a
 * key frame (frame tag P bit == 0: 3-byte tag + start code + dimensions), else 3.
 */
export function clearLength(kind, firstByte) {
  if (kind === 'audio') return 1;
  return (firstByte & 0x01) === 0 ? 10 : 3;
}

/** The metadata the SFrame AAD carries after the header: kind ‖ C (F§2). */
function frameMetadata(kind, clear) {
  return concat(Uint8Array.of(KIND_BYTE[kind]), clear);
}

/** Encrypt one frame's bytes with a given KID key and CTR. Caller owns CTR uniqueness. */
export async function encryptFrame(keys, ctr, kind, frame) {
  const n = clearLength(kind, frame[0]);
  if (frame.length < n) return null; // shorter than its clear prefix: malformed, dropped
  const clear = frame.subarray(0, n);
  const { header, ciphertext } = await seal(keys, ctr, frameMetadata(kind, clear), frame.subarray(n));
  return concat(clear, ciphertext, header, Uint8Array.of(header.length));
}

/**
 * Split an encrypted frame into its parts without any key: the SFU-visible view.
 * Returns {clear, ciphertext, header, kid, ctr} or {reject: reason}.
 */
export function parseFrame(kind, data) {
  const headerLength = data[data.length - 1];
  if (!(headerLength >= 1 && headerLength <= MAX_HEADER)) return { reject: 'bad-header' };
  const n = clearLength(kind, data[0]);
  const bodyEnd = data.length - 1 - headerLength;
  if (bodyEnd < n + NT) return { reject: 'too-short' };
  const header = data.subarray(bodyEnd, data.length - 1);
  const decoded = decodeHeader(header);
  if (decoded === null) return { reject: 'bad-header' };
  return { clear: data.subarray(0, n), ciphertext: data.subarray(n, bodyEnd), header, ...decoded };
}

// ----------------------------------------------------------- sending side (F§5, F§7)

/**
 * The sending state of one worker: its own base key, KID and the one frame counter
 * shared by all of its tracks. The counter is never reset — not on ratchet, not on
 * rotation — so no (key, nonce) pair can repeat (RFC 9605 §4.3, §9.1).
 */
export class SendState {
  constructor({ random = (bytes) => globalThis.crypto.getRandomValues(bytes) } = {}) {
    this.random = random;
    this.counter = 0n; // next CTR; one per worker, for every track
    this.current = null; // {sender, generation, step, base, keys}
    this.pending = null; // a rotated key announced but not yet used
  }

  /** Draw a fresh base key for (sender, generation), step 0, and use it now. */
  async setKey(sender, generation = 0) {
    this.current = await this.#make(sender, generation, 0, this.random(new Uint8Array(32)));
    this.pending = null;
    return exportKey(this.current);
  }

  /** Advance one step: base ← ratchet(base). Used at once (receivers follow, F§5). */
  async ratchet() {
    const cur = this.#require();
    if (cur.step === 0xff) throw new RangeError('step exhausted: rotate instead');
    this.current = await this.#make(cur.sender, cur.generation, cur.step + 1, await ratchetKey(cur.base));
    return exportKey(this.current);
  }

  /** Draw the next generation's key; it is used only after switchToPending(). */
  async rotate() {
    const cur = this.#require();
    // One key per generation (F§6a): a drawn key is never replaced by another.
    if (this.pending !== null) throw new Error('a rotation is pending: switch first');
    if (cur.generation === 0xffff) throw new RangeError('generation exhausted');
    this.pending = await this.#make(cur.sender, cur.generation + 1, 0, this.random(new Uint8Array(32)));
    return exportKey(this.pending);
  }

  /** Start encrypting with the rotated key. */
  switchToPending() {
    if (this.pending === null) return null;
    [this.current, this.pending] = [this.pending, null];
    return describe(this.current);
  }

  /** Reserve the next CTR, or null at overflow: encryption is refused (F§7). */
  nextCounter() {
    if (this.counter >= CTR_LIMIT) return null;
    return this.counter++;
  }

  /** Encrypt one frame (Uint8Array) of `kind`; null means "drop it, never send clear". */
  async encrypt(kind, frame) {
    if (this.current === null) return null; // no key yet: nothing leaves
    const ctr = this.nextCounter();
    if (ctr === null) return null;
    return encryptFrame(this.current.keys, ctr, kind, frame);
  }

  async #make(sender, generation, step, base) {
    const kid = makeKid(sender, generation, step);
    return { sender, generation, step, base, keys: await importKid(base, kid) };
  }

  #require() {
    if (this.current === null) throw new Error('no sending key');
    return this.current;
  }
}

function describe({ sender, generation, step }) {
  return { sender, generation, step };
}

function exportKey(entry) {
  return { ...describe(entry), key: entry.base.slice() };
}

// ---------------------------------------------------------- receiving side (F§6)

/**
 * Sliding replay window over CTR values (RFC 9605 §7.4, §9.3): accepts a CTR
 * above the highest seen, or within REPLAY_WINDOW below it and not yet seen.
 */
export class ReplayWindow {
  constructor() {
    this.top = -1n; // highest CTR accepted so far
    this.seen = new Uint8Array(REPLAY_WINDOW); // seen[ctr mod W] for ctr in (top − W, top]
  }

  check(ctr) {
    if (ctr > this.top) return true;
    if (this.top - ctr >= BigInt(REPLAY_WINDOW)) return false; // too old to tell: reject
    return this.seen[Number(ctr % BigInt(REPLAY_WINDOW))] === 0;
  }

  /** Record `ctr`; call only after its frame's tag verified. */
  update(ctr) {
    if (ctr > this.top) {
      const advance = ctr - this.top;
      const clear = advance >= BigInt(REPLAY_WINDOW) ? REPLAY_WINDOW : Number(advance);
      for (let i = 0; i < clear; i++) this.seen[Number((ctr - BigInt(i)) % BigInt(REPLAY_WINDOW))] = 0;
      this.top = ctr;
    }
    this.seen[Number(ctr % BigInt(REPLAY_WINDOW))] = 1;
  }
}

/**
 * The receive keys of one worker, and the key policy (F§6a) that holds whatever the
 * page asks: a participant's generation is installed at most once and never an older
 * one, a removed participant never comes back, a sender index names one participant
 * at a time, and a sender's previous generation is retired GRACE_MS after the first
 * authenticated frame of the next. `records` outlive the keys: they are never reset.
 */
export class ReceiveState {
  constructor({ now = () => performance.now() } = {}) {
    this.now = now;
    this.senders = new Map(); // sender index → {participant, generations: Map}
    this.records = new Map(); // participant → {sender, generation, removed}
  }

  /** Install the base key of (sender, generation) at `step`: null, or why it is refused. */
  async setKey({ participant, sender, generation, step, key }) {
    if (typeof participant !== 'string' || participant === '') throw new TypeError('participant must be a string');
    if (key?.length !== 32) throw new RangeError('a base key is 32 bytes');
    const kid = makeKid(sender, generation, step);
    const record = this.records.get(participant);
    const owner = this.senders.get(sender)?.participant;
    if (record?.removed) return 'removed';
    if (record !== undefined && record.sender !== sender) return 'wrong-sender';
    if (owner !== undefined && owner !== participant) return 'sender-taken';
    if (record !== undefined && generation <= record.generation) return 'old-key';
    this.records.set(participant, { sender, generation, removed: false }); // before any await
    const base = Uint8Array.from(key);
    const keys = await importKid(base, kid);
    let entry = this.senders.get(sender);
    if (entry === undefined) this.senders.set(sender, (entry = { participant, generations: new Map() }));
    entry.generations.set(generation, {
      sender, generation, step, base, keys,
      previous: null, // the previous committed step's keys: frames in flight across a ratchet
      chain: new Map([[step, Promise.resolve(base)]]), // step → base key, each derived once
      ahead: new Map(), // step → keys of a later step, derived but not committed
      replay: new ReplayWindow(), // one per generation: the counter runs on across steps
      retireAt: Infinity,
    });
    // Keep the two newest generations: the new one and the one still in flight.
    const keep = [...entry.generations.keys()].sort((a, b) => b - a).slice(0, 2);
    for (const g of entry.generations.keys()) if (!keep.includes(g)) entry.generations.delete(g);
    return null;
  }

  /** A new signaling session (F§6a): forget every key and record of the previous one. */
  newSession() {
    this.senders.clear();
    this.records.clear();
  }

  /** Forget every key of `participant` and free its sender index; its record stays. */
  removeParticipant(participant) {
    const record = this.records.get(participant) ?? { sender: null, generation: -1 };
    this.records.set(participant, { ...record, removed: true });
    for (const [sender, entry] of this.senders) if (entry.participant === participant) this.senders.delete(sender);
  }

  /**
   * Decrypt one frame received on a track of `participant` (null: a track of nobody).
   * Returns {ok: Uint8Array} (C ‖ plaintext, authenticated), {hold: true} (key not
   * known yet), or {reject: reason}. Never throws on any input bytes.
   */
  async decrypt(kind, participant, data) {
    if (typeof participant !== 'string') return { reject: 'unmapped' }; // F§6
    if (data.length === 0) return { ok: data }; // empty frames (Opus DTX) pass
    const frame = parseFrame(kind, data); // trailer, length 1..17, canonical (F§4)
    if (frame.reject) return frame;
    const id = splitKid(frame.kid);
    if (id === null) return { reject: 'bad-kid' };
    const entry = this.senders.get(id.sender);
    if (entry === undefined) return { hold: true }; // unknown KID: held ≤ 1 s (F§6)
    if (entry.participant !== participant) return { reject: 'wrong-sender' }; // F§6
    const gen = entry.generations.get(id.generation);
    if (gen === undefined) {
      const newest = Math.max(...entry.generations.keys());
      return id.generation > newest ? { hold: true } : { reject: 'stale-key' };
    }
    if (this.now() >= gen.retireAt) { // F§6a: the grace after the next generation is over
      entry.generations.delete(id.generation);
      return { reject: 'stale-key' };
    }
    const candidate = await this.#keysFor(gen, id.step);
    if (candidate === null) return { reject: 'step-out-of-range' };
    if (!gen.replay.check(frame.ctr)) return { reject: 'replay' }; // cheap early reject
    const metadata = frameMetadata(kind, frame.clear);
    const plaintext = await open(candidate.keys, frame.header, frame.ctr, metadata, frame.ciphertext);
    // No ratchet-and-retry: a tag failure is final for this frame (F§6).
    if (plaintext === null) return { reject: 'auth-failed' };
    // Verified. Re-check replay (another track may have raced us across the await),
    // then commit the window, any step advance, and start retiring older generations.
    if (!gen.replay.check(frame.ctr)) return { reject: 'replay' };
    gen.replay.update(frame.ctr);
    this.#commitStep(gen, candidate);
    for (const old of entry.generations.values()) {
      if (old.generation < gen.generation && old.retireAt === Infinity) old.retireAt = this.now() + GRACE_MS;
    }
    return { ok: concat(frame.clear, plaintext) };
  }

  /** Keys for `step`: committed, previous, or any later step of the generation (F§6). */
  async #keysFor(gen, step) {
    if (step === gen.step) return gen;
    if (gen.previous !== null && step === gen.previous.step) return gen.previous;
    if (step < gen.step) return null;
    let found = gen.ahead.get(step);
    if (found === undefined) { // a promise: tracks racing for one step share its derivation
      const kid = makeKid(gen.sender, gen.generation, step);
      found = this.#baseAt(gen, step).then(async (base) => ({ step, base, keys: await importKid(base, kid) }));
      gen.ahead.set(step, found);
    }
    return found;
  }

  /** The base key of `step`, ratcheted on from the last one derived: ≤ 255 per generation. */
  #baseAt(gen, step) {
    let base = gen.chain.get(step);
    if (base === undefined) gen.chain.set(step, (base = this.#baseAt(gen, step - 1).then(ratchetKey)));
    return base;
  }

  #commitStep(gen, next) {
    if (next.step <= gen.step) return;
    gen.previous = { step: gen.step, keys: gen.keys };
    Object.assign(gen, { step: next.step, base: next.base, keys: next.keys });
    for (const map of [gen.chain, gen.ahead]) for (const s of map.keys()) if (s < next.step) map.delete(s);
    gen.ahead.delete(next.step);
  }
}

// ---------------------------------------------------------- the transforms (F§8)

/** Frame metadata's codec, lower-cased, or null when the browser does not say. */
function codecOf(frame) {
  try {
    const mime = frame.getMetadata?.().mimeType;
    return typeof mime === 'string' ? mime.toLowerCase() : null;
  } catch {
    return null;
  }
}

/**
 * A TransformStream that encrypts (operation 'encrypt') or decrypts ('decrypt')
 * encoded frames of one track. It never throws: any failure drops the frame.
 * `report(event)` receives counters and failures; `now()` is the clock.
 */
export function makeTransform({ operation, kind, participant, send, receive, stats, report, now }) {
  if (kind !== 'audio' && kind !== 'video') throw new TypeError('kind must be audio or video');
  const held = []; // {frame, bytes, at}: frames waiting for their key (F§6)

  const drop = (reason) => {
    stats.dropped[reason] = (stats.dropped[reason] ?? 0) + 1;
    if (operation === 'decrypt') report.failure(participant, reason);
  };

  const wrongCodec = (frame) => {
    const codec = codecOf(frame);
    return codec !== null && codec !== CODECS[kind]; // F§2: only VP8 and Opus
  };

  async function encrypt(frame, controller) {
    const bytes = new Uint8Array(frame.data);
    if (bytes.length === 0) return controller.enqueue(frame); // nothing to hide
    if (wrongCodec(frame)) return drop('wrong-codec');
    const out = await send.encrypt(kind, bytes);
    if (out === null) return drop('not-encrypted'); // no key, overflow or malformed
    frame.data = out.buffer;
    stats.encrypted++;
    controller.enqueue(frame);
  }

  // Held frames are tried again, in order, with every new frame of the track. One that
  // decrypts means the track has moved past the frames still held before it: they are
  // dropped, so a frame with a KID nobody has cannot stall the frames behind it (F§6).
  async function decrypt(frame, controller) {
    const t = now();
    const bytes = new Uint8Array(frame.data);
    if (bytes.length > 0 && wrongCodec(frame)) return drop('wrong-codec');
    while (held.length > 0 && t - held[0].at > HOLD_MS) {
      held.shift();
      drop('unknown-kid'); // waited 1 s for a key that never came
    }
    held.push({ frame, bytes, at: t });
    const waiting = [];
    for (const entry of held.splice(0)) {
      const result = await receive.decrypt(kind, participant, entry.bytes);
      if (result.hold) {
        waiting.push(entry);
      } else if (result.reject) {
        drop(result.reject);
      } else {
        for (const _ of waiting.splice(0)) drop('unknown-kid');
        entry.frame.data = result.ok.buffer; // only authenticated bytes reach the decoder
        if (result.ok.length > 0) stats.decrypted++;
        controller.enqueue(entry.frame);
      }
    }
    for (const _ of waiting.splice(0, waiting.length - HOLD_MAX_FRAMES)) drop('unknown-kid');
    held.push(...waiting);
  }

  const step = operation === 'encrypt' ? encrypt : decrypt;
  return new TransformStream({
    async transform(frame, controller) {
      try {
        await step(frame, controller);
      } catch {
        // Never throw out of the transform (F§6): a broken stream would stop the
        // track. The frame is dropped, never passed on in clear.
        stats.dropped.error = (stats.dropped.error ?? 0) + 1;
      }
      stats.frames++;
    },
  });
}

/** Per-participant failure reports, at most one per FAILURE_REPORT_MS (F§8). */
export function makeReporter(post, now) {
  const last = new Map(); // participant → {at, count, reasons}
  return {
    failure(participant, reason) {
      const t = now();
      const entry = last.get(participant) ?? { at: -Infinity, count: 0, reasons: {} };
      entry.count++;
      entry.reasons[reason] = (entry.reasons[reason] ?? 0) + 1;
      last.set(participant, entry);
      if (t - entry.at >= FAILURE_REPORT_MS) {
        post({ type: 'decryptFailure', participant, count: entry.count, reasons: entry.reasons });
        last.set(participant, { at: t, count: 0, reasons: {} });
      }
    },
  };
}

/** Everything one worker holds, and its message protocol with the page (F§8). */
export function createWorkerState({ post, now = () => performance.now(), random } = {}) {
  const send = new SendState(random ? { random } : {});
  const receive = new ReceiveState({ now });
  const stats = { frames: 0, encrypted: 0, decrypted: 0, dropped: {}, refused: {} };
  const report = makeReporter(post, now);

  function attach({ operation, kind, participant, readable, writable }) {
    const transform = makeTransform({ operation, kind, participant, send, receive, stats, report, now });
    readable.pipeThrough(transform).pipeTo(writable).catch(() => {}); // ends with the track
  }

  async function handle(msg) {
    switch (msg?.type) {
      case 'setSendKey': { // draw our own key; the page distributes it
        const key = await send.setKey(msg.sender, msg.generation ?? 0);
        post({ type: 'keySwitched', ...describe(key) });
        return { type: 'sendKey', ...key };
      }
      case 'ratchet': {
        const key = await send.ratchet();
        post({ type: 'keySwitched', ...describe(key) });
        return { type: 'sendKey', ...key };
      }
      case 'rotate':
        return { type: 'sendKey', ...(await send.rotate()), pending: true };
      case 'switchKey': {
        const now = send.switchToPending();
        if (now !== null) post({ type: 'keySwitched', ...now });
        return { type: 'switched', current: now };
      }
      case 'setReceiveKey': { // the key policy decides, not the page (F§6a)
        const refused = await receive.setKey(msg);
        const { participant, sender, generation } = msg;
        if (refused === null) return { type: 'receiveKeySet', participant, sender, generation };
        stats.refused[refused] = (stats.refused[refused] ?? 0) + 1;
        return { type: 'receiveKeyRefused', participant, sender, generation, reason: refused };
      }
      case 'removeParticipant':
        receive.removeParticipant(msg.participant);
        return { type: 'removed', participant: msg.participant };
      case 'newSession':
        receive.newSession();
        return { type: 'sessionStarted' };
      case 'getCounters':
        return { type: 'counters', ...stats, dropped: { ...stats.dropped }, refused: { ...stats.refused }, counter: String(send.counter) };
      case 'attach': // Chromium createEncodedStreams(): the page posts the streams
        attach(msg);
        return null;
      default:
        return { type: 'error', error: `unknown message ${String(msg?.type)}` };
    }
  }

  return { send, receive, stats, attach, handle };
}

// ---------------------------------------------------------- worker entry point (F§8)

if (typeof WorkerGlobalScope !== 'undefined' && globalThis instanceof WorkerGlobalScope) {
  const post = (message) => globalThis.postMessage(message);
  const state = createWorkerState({ post });
  // Messages are handled one at a time, in order: a key installed before an
  // attach or a ratchet is in place when the next message runs.
  let queue = Promise.resolve();
  globalThis.onmessage = ({ data }) => {
    queue = queue.then(async () => {
      try {
        const reply = await state.handle(data);
        if (reply !== null) post({ ...reply, id: data?.id });
      } catch (error) {
        post({ type: 'error', id: data?.id, error: String(error?.message ?? error) });
      }
    });
  };
  // Standard API: new RTCRtpScriptTransform(worker, options) fires this event.
  globalThis.onrtctransform = ({ transformer }) => {
    const { operation, kind, participant } = transformer.options;
    const { readable, writable } = transformer;
    state.attach({ operation, kind, participant, readable, writable });
  };
}
