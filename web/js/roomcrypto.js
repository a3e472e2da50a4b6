// Room cryptography of sealed signaling: the browser twin of e2ee/roomcrypto.py.
//
// docs/PROTOCOL.md, "Keys", "Connecting and joining", "Sealed messages":
//   K        = Argon2id(NFC(password), params.salt)             libsodium crypto_pwhash; the
//                                                               salt: 16 random bytes of the
//                                                               room's creator (KdfParams)
//   kRoom    = HKDF-SHA256(K, "sealroom/v1/k_room\0" ‖ room)    AES-256-GCM key of envelopes
//   admSeed  = HKDF-SHA256(K, "sealroom/v1/admission\0" ‖ room) Ed25519 seed of the admission key
//   join sig = Ed25519(admSeed, "sealroom/v1/join" ‖ lp origin ‖ lp room ‖ lp nonce ‖ lp conn
//                       [‖ lp resumePk])                  the resume signature: the same bytes,
//                                                          the previous membership's resume seed
//   envelope = AES-256-GCM(kRoom, random 96-bit nonce, aad = header.aad())
// Argon2id and Ed25519 come from the vendored libsodium.js (web/vendor/README.md); SHA-256,
// HKDF and AES-GCM from WebCrypto. tests/vectors/roomcrypto.json pins both languages.
//
// Byte strings are Uint8Array. Functions that touch WebCrypto or libsodium are async.

import sodium from "../vendor/libsodium-wrappers-sumo.mjs";

export const KDF_ALG = "argon2id13";
// libsodium crypto_pwhash_argon2id_{OPS,MEM}LIMIT_INTERACTIVE (p = 1): the floor.
export const MIN_OPSLIMIT = 2;
export const MIN_MEMLIMIT = 64 * 1024 * 1024;
// The ceiling: a hostile room record must not make joiners burn minutes or gigabytes.
export const MAX_OPSLIMIT = 16;
export const MAX_MEMLIMIT = 1024 * 1024 * 1024;

const KEY_SIZE = 32;
export const SALT_SIZE = 16; // crypto_pwhash_SALTBYTES
const NONCE_SIZE = 12; // AES-GCM 96-bit IV, NIST SP 800-38D §8.2
const TAG_SIZE = 16;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;
const U64_MAX = 0xffffffffffffffffn;

const enc = new TextEncoder();
const subtle = globalThis.crypto.subtle;

export class WeakKdfParams extends Error {
  constructor(message) { super(message); this.name = "WeakKdfParams"; }
}
export class ExcessiveKdfParams extends Error {
  constructor(message) { super(message); this.name = "ExcessiveKdfParams"; }
}
export class InvalidEnvelope extends Error {
  constructor(message) { super(message); this.name = "InvalidEnvelope"; }
}

/**
 * Argon2id parameters and salt of a room record. On the wire exactly
 * {"alg": "argon2id13", "ops": int, "mem": int, "salt": base64 of 16 bytes}.
 */
export class KdfParams {
  #salt;

  constructor({ salt, alg = KDF_ALG, opslimit = MIN_OPSLIMIT, memlimit = MIN_MEMLIMIT }) {
    this.#salt = salt instanceof Uint8Array ? salt.slice() : salt;
    this.alg = alg;
    this.opslimit = opslimit;
    this.memlimit = memlimit;
    Object.freeze(this);
  }

  /** The salt (a copy: the parameters never change once made). */
  get salt() {
    return this.#salt instanceof Uint8Array ? this.#salt.slice() : this.#salt;
  }

  /** Parameters for a new room: a fresh random salt (the creator's job). */
  static generate({ opslimit = MIN_OPSLIMIT, memlimit = MIN_MEMLIMIT } = {}) {
    const salt = globalThis.crypto.getRandomValues(new Uint8Array(SALT_SIZE));
    const params = new KdfParams({ salt, opslimit, memlimit });
    checkKdfParams(params);
    return params;
  }

  toJson() {
    return { alg: this.alg, ops: this.opslimit, mem: this.memlimit, salt: b64(this.#salt) };
  }

  /** Same algorithm, cost and salt. */
  equals(other) {
    return other instanceof KdfParams && other.alg === this.alg && other.opslimit === this.opslimit
      && other.memlimit === this.memlimit && b64(other.salt) === b64(this.#salt);
  }

  /**
   * Parse the wire form. Malformed (keys, types, base64, salt size) → TypeError; then
   * checkKdfParams' policy (WeakKdfParams, ExcessiveKdfParams).
   */
  static fromJson(obj) {
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
      throw new TypeError("kdf params must be an object");
    }
    const keys = Object.keys(obj).sort();
    if (keys.join(",") !== "alg,mem,ops,salt") {
      throw new TypeError("kdf params must have exactly the keys alg, ops, mem, salt");
    }
    if (typeof obj.alg !== "string") throw new TypeError("kdf alg must be a string");
    if (!Number.isSafeInteger(obj.ops) || !Number.isSafeInteger(obj.mem)) {
      throw new TypeError("kdf ops and mem must be integers");
    }
    const params = new KdfParams({ salt: unb64(obj.salt), alg: obj.alg, opslimit: obj.ops, memlimit: obj.mem });
    checkKdfParams(params);
    return params;
  }
}

/** Refuse exactly what e2ee/roomcrypto.py check_kdf_params refuses. */
export function checkKdfParams(p) {
  const salt = p.salt;
  if (!(salt instanceof Uint8Array) || salt.length !== SALT_SIZE) {
    throw new TypeError(`kdf salt must be ${SALT_SIZE} bytes`);
  }
  if (p.alg !== KDF_ALG) throw new WeakKdfParams(`unsupported kdf algorithm ${JSON.stringify(p.alg)}`);
  if (!Number.isSafeInteger(p.opslimit) || !Number.isSafeInteger(p.memlimit)) {
    throw new TypeError("kdf ops and mem must be integers");
  }
  if (p.opslimit < MIN_OPSLIMIT || p.memlimit < MIN_MEMLIMIT) {
    throw new WeakKdfParams(`kdf parameters below the minimum (ops >= ${MIN_OPSLIMIT}, mem >= ${MIN_MEMLIMIT})`);
  }
  if (p.opslimit > MAX_OPSLIMIT || p.memlimit > MAX_MEMLIMIT) {
    throw new ExcessiveKdfParams(`kdf parameters above the maximum (ops <= ${MAX_OPSLIMIT}, mem <= ${MAX_MEMLIMIT})`);
  }
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) { out.set(p, pos); pos += p.length; }
  return out;
}

function utf8(text) {
  if (typeof text !== "string") throw new TypeError("expected a string");
  if (!text.isWellFormed()) throw new TypeError("string has lone surrogates"); // Python refuses too
  return enc.encode(text);
}

function bytesOf(value, name) {
  if (!(value instanceof Uint8Array)) throw new TypeError(`${name} must be a Uint8Array`);
  return value;
}

/** Length-prefixed field: uint16 big-endian length ‖ bytes (strings as UTF-8). */
function lp(value) {
  const data = typeof value === "string" ? utf8(value) : bytesOf(value, "field");
  if (data.length > U16_MAX) throw new RangeError("field longer than 65535 bytes");
  return concat(new Uint8Array([data.length >> 8, data.length & 0xff]), data);
}

/** K = Argon2id(NFC(password), params.salt), 32 bytes (RFC 9106 via libsodium). */
export async function passwordKey(password, params) {
  if (!(params instanceof KdfParams)) throw new TypeError("passwordKey needs the room's KdfParams");
  checkKdfParams(params);
  await sodium.ready;
  return sodium.crypto_pwhash(
    KEY_SIZE, utf8(password.normalize("NFC")), params.salt, params.opslimit, params.memlimit,
    sodium.crypto_pwhash_ALG_ARGON2ID13,
  );
}

/** RFC 5869 HKDF-SHA256 with an empty salt (§2.2: equivalent to HashLen zero bytes). */
export async function hkdfSha256(ikm, info, length = KEY_SIZE) {
  const key = await subtle.importKey("raw", bytesOf(ikm, "ikm"), "HKDF", false, ["deriveBits"]);
  const bits = await subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: bytesOf(info, "info") },
    key, length * 8,
  );
  return new Uint8Array(bits);
}

/** Sub-keys of K (docs/PROTOCOL.md, Keys) → {kRoom, admSeed, admPk}. */
export async function roomKeys(K, room) {
  if (bytesOf(K, "K").length !== KEY_SIZE) throw new RangeError("K must be 32 bytes");
  const roomB = utf8(room);
  const kRoom = await hkdfSha256(K, concat(enc.encode("sealroom/v1/k_room\0"), roomB));
  const admSeed = await hkdfSha256(K, concat(enc.encode("sealroom/v1/admission\0"), roomB));
  await sodium.ready;
  // RFC 8032 §5.1.5: the seed is the private key; the public key follows from it.
  const admPk = sodium.crypto_sign_seed_keypair(admSeed).publicKey;
  return { kRoom, admSeed, admPk };
}

/**
 * What the admission signature covers (docs/PROTOCOL.md, "Connecting and joining"): the label
 * without a trailing NUL, then lp(origin), lp(room), lp(the 32 raw nonce bytes), lp(conn);
 * a join that sends `resume_pk` ("Resuming") appends lp(resumePk), else the bytes are the
 * version-2 transcript's.
 */
export function joinTranscript(origin, room, nonce, conn, resumePk = null) {
  const parts = [enc.encode("sealroom/v1/join"), lp(origin), lp(room), lp(bytesOf(nonce, "nonce")), lp(conn)];
  if (resumePk !== null) {
    if (bytesOf(resumePk, "resumePk").length !== 32) throw new RangeError("resumePk must be 32 bytes");
    parts.push(lp(resumePk));
  }
  return concat(...parts);
}

/**
 * Ed25519 signature (RFC 8032 §5.1.6, deterministic) of the join transcript, 64 bytes. The
 * resume signature is the same with the previous membership's resume seed ("Resuming").
 */
export async function signJoin(admSeed, origin, room, nonce, conn, resumePk = null) {
  if (bytesOf(admSeed, "admSeed").length !== KEY_SIZE) throw new RangeError("admSeed must be 32 bytes");
  await sodium.ready;
  const { privateKey } = sodium.crypto_sign_seed_keypair(admSeed);
  try {
    return sodium.crypto_sign_detached(joinTranscript(origin, room, nonce, conn, resumePk), privateKey);
  } finally {
    sodium.memzero(privateKey);
  }
}

/** A fresh Ed25519 key pair for one membership ("Resuming"): {seed, publicKey}. */
export async function newResumeKey() {
  await sodium.ready;
  const seed = globalThis.crypto.getRandomValues(new Uint8Array(KEY_SIZE));
  const { publicKey, privateKey } = sodium.crypto_sign_seed_keypair(seed);
  sodium.memzero(privateKey);
  return { seed, publicKey };
}

/** RFC 8032 §5.1.7 verification; never throws (the server's check, here for tests/tools). */
export async function verifyJoin(admPk, sig, origin, room, nonce, conn, resumePk = null) {
  try {
    if (!(admPk instanceof Uint8Array) || admPk.length !== 32) return false;
    if (!(sig instanceof Uint8Array) || sig.length !== 64) return false;
    const message = joinTranscript(origin, room, nonce, conn, resumePk);
    await sodium.ready;
    return sodium.crypto_sign_verify_detached(sig, message, admPk);
  } catch {
    return false;
  }
}

function checkUint(value, max, name) {
  if (typeof value === "bigint") {
    if (value < 0n || value > max) throw new RangeError(`${name} out of range`);
    return value;
  }
  if (!Number.isSafeInteger(value) || value < 0 || BigInt(value) > max) {
    throw new RangeError(`${name} must be an integer in 0..${max}`);
  }
  return value;
}

/**
 * Clear header of a sealed envelope; aad() is the AES-GCM associated data.
 * `to === "*"` means everyone else. seq may be a safe integer or a BigInt (u64).
 */
export class EnvelopeHeader {
  constructor({ room, epoch, sender, to, seq, v = 1 }) {
    for (const [name, text] of [["room", room], ["sender", sender], ["to", to]]) {
      if (utf8(text).length > U16_MAX) throw new RangeError(`${name} longer than 65535 bytes`);
    }
    checkUint(v, 0xffn, "v");
    checkUint(epoch, BigInt(U32_MAX), "epoch");
    checkUint(seq, U64_MAX, "seq");
    Object.assign(this, { room, epoch, sender, to, seq, v });
    Object.freeze(this);
  }

  /** "sealroom/v1/env" ‖ u8 v ‖ lp room ‖ u32 epoch ‖ lp from ‖ lp to ‖ u64 seq (big-endian). */
  aad() {
    const v = new Uint8Array([Number(this.v)]);
    const epoch = new Uint8Array(4);
    new DataView(epoch.buffer).setUint32(0, Number(this.epoch));
    const seq = new Uint8Array(8);
    new DataView(seq.buffer).setBigUint64(0, BigInt(this.seq));
    return concat(enc.encode("sealroom/v1/env"), v, lp(this.room), epoch, lp(this.sender), lp(this.to), seq);
  }
}

async function aesKey(kRoom, usage) {
  if (!(kRoom instanceof Uint8Array) || kRoom.length !== KEY_SIZE) {
    throw new RangeError("kRoom must be 32 bytes");
  }
  return subtle.importKey("raw", kRoom, "AES-GCM", false, [usage]);
}

/**
 * AES-256-GCM seal → {nonce, ciphertext} (ciphertext ‖ 16-byte tag). The nonce is 96 random
 * bits (NIST SP 800-38D §8.2.2); pass one only in tests.
 */
export async function seal(kRoom, header, plaintext, nonce = null) {
  const key = await aesKey(kRoom, "encrypt");
  if (nonce === null) nonce = globalThis.crypto.getRandomValues(new Uint8Array(NONCE_SIZE));
  else if (bytesOf(nonce, "nonce").length !== NONCE_SIZE) throw new RangeError("nonce must be 12 bytes");
  const ct = await subtle.encrypt(
    { name: "AES-GCM", iv: nonce, additionalData: header.aad(), tagLength: 128 },
    key, bytesOf(plaintext, "plaintext"),
  );
  return { nonce, ciphertext: new Uint8Array(ct) };
}

/** Authenticate and decrypt; throws InvalidEnvelope (only) on any failure. */
export async function openEnvelope(kRoom, header, nonce, ciphertext) {
  try {
    if (!(nonce instanceof Uint8Array) || nonce.length !== NONCE_SIZE) throw new Error("nonce must be 12 bytes");
    if (!(ciphertext instanceof Uint8Array) || ciphertext.length < TAG_SIZE) throw new Error("ciphertext too short");
    const key = await aesKey(kRoom, "decrypt");
    const pt = await subtle.decrypt(
      { name: "AES-GCM", iv: nonce, additionalData: header.aad(), tagLength: 128 },
      key, ciphertext,
    );
    return new Uint8Array(pt);
  } catch (err) {
    throw new InvalidEnvelope(`envelope does not authenticate (${err?.name ?? "error"})`);
  }
}

/**
 * Per-receiver replay check (docs/PROTOCOL.md, Sealed messages): seq must grow per sender. check() before
 * opening, commit() only after the envelope authenticated.
 */
export class ReplayGuard {
  #last = new Map();

  check(sender, seq) {
    const last = this.#last.get(sender);
    return last === undefined || BigInt(seq) > last;
  }

  commit(sender, seq) {
    const last = this.#last.get(sender);
    if (last === undefined || BigInt(seq) > last) this.#last.set(sender, BigInt(seq));
  }
}

const B64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Standard base64 with padding (RFC 4648 §4). */
export function b64(data) {
  let bin = "";
  const bytes = bytesOf(data, "data");
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

/** Strict RFC 4648 §4 decoding: alphabet, padding and canonical (zero) pad bits (§3.5). */
export function unb64(text) {
  if (typeof text !== "string" || !B64_RE.test(text)) throw new TypeError("invalid base64");
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  if (b64(out) !== text) throw new TypeError("non-canonical base64");
  return out;
}
