// node --test: web/js/roomcrypto.js against tests/vectors/roomcrypto.json (byte for byte),
// plus round trips, tamper rejection, the KDF parameter policy and the vendored files' hashes.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import * as rc from "../js/roomcrypto.js";

const root = new URL("../../", import.meta.url);
const vectors = JSON.parse(readFileSync(new URL("tests/vectors/roomcrypto.json", root), "utf8"));
const MIB = 1024 * 1024;

const hex = (u8) => Buffer.from(u8).toString("hex");
const unhex = (h) => new Uint8Array(Buffer.from(h, "hex"));
const header = (h) => new rc.EnvelopeHeader(h);

test("vendored libsodium files match the SHA-256 recorded in web/vendor/README.md", () => {
  const readme = readFileSync(new URL("web/vendor/README.md", root), "utf8");
  const files = ["libsodium-sumo.mjs", "libsodium-wrappers-sumo.mjs", "LICENSE.libsodium.js"];
  for (const name of files) {
    const digest = createHash("sha256").update(readFileSync(new URL(`web/vendor/${name}`, root))).digest("hex");
    const row = readme.split("\n").find((line) => line.startsWith(`| \`${name}\``));
    assert.ok(row, `README has a row for ${name}`);
    assert.ok(row.includes(digest), `${name}: ${digest} not recorded`);
  }
});

test("KDF vectors: wire params with salt, Argon2id K (NFC), sub-keys, adm_pk", async () => {
  for (const c of vectors.kdf) {
    const params = rc.KdfParams.fromJson(c.params);
    assert.equal(hex(params.salt), c.salt);
    assert.deepEqual(params.toJson(), c.params);
    const K = await rc.passwordKey(c.password, params);
    assert.equal(hex(K), c.K, `K of ${JSON.stringify(c.password)}`);
    const keys = await rc.roomKeys(K, c.room);
    assert.equal(hex(keys.kRoom), c.k_room);
    assert.equal(hex(keys.admSeed), c.adm_seed);
    assert.equal(hex(keys.admPk), c.adm_pk);
  }
  const nfd = vectors.kdf.find((c) => c.password === "pa\u0308sswo\u0308rd 🔑");
  const nfc = vectors.kdf.find((c) => c.password === "p\u00e4ssw\u00f6rd 🔑");
  assert.ok(nfd && nfc && nfd.K === nfc.K);
  const [first, other] = [vectors.kdf[0], vectors.kdf.at(-1)];
  assert.ok(first.password === other.password && first.room === other.room && first.salt !== other.salt);
  assert.notEqual(first.K, other.K); // the salt, not the room name, makes K differ
  assert.equal("roomSalt" in rc, false);
});

test("KDF invalid vectors: refused as malformed, weak or excessive, like Python", () => {
  const classes = { weak: rc.WeakKdfParams, excessive: rc.ExcessiveKdfParams, malformed: TypeError };
  for (const c of vectors.kdf_invalid) {
    assert.throws(() => rc.KdfParams.fromJson(c.params), classes[c.error], JSON.stringify(c.params));
  }
});

test("KdfParams.generate: fresh random 16-byte salt, default cost, exact wire form", () => {
  const salts = new Set();
  for (let i = 0; i < 32; i++) salts.add(hex(rc.KdfParams.generate().salt));
  assert.equal(salts.size, 32);
  const p = rc.KdfParams.generate();
  assert.equal(p.salt.length, 16);
  assert.deepEqual(Object.keys(p.toJson()), ["alg", "ops", "mem", "salt"]);
  assert.deepEqual({ ...p.toJson(), salt: null }, { alg: "argon2id13", ops: 2, mem: 64 * MIB, salt: null });
  const again = rc.KdfParams.fromJson(p.toJson());
  assert.ok(again.equals(p) && p.equals(again));
  assert.ok(!rc.KdfParams.generate().equals(p));
  p.salt[0] ^= 1; // the getter hands out a copy
  assert.ok(again.equals(p));
});

test("HKDF-SHA256 matches RFC 5869 A.3 (empty salt and info)", async () => {
  const okm = await rc.hkdfSha256(new Uint8Array(22).fill(0x0b), new Uint8Array(0), 42);
  assert.equal(hex(okm), "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
});

test("join vectors: transcript and deterministic Ed25519 signature", async () => {
  for (const c of vectors.join) {
    const args = [c.origin, c.room, unhex(c.nonce), c.conn];
    assert.equal(hex(rc.joinTranscript(...args)), c.transcript);
    // label without NUL, then lp(origin); the nonce as lp(32 raw bytes), not its base64 text
    assert.ok(c.transcript.startsWith(hex(new TextEncoder().encode("sealroom/v1/join")) + hex([0, new TextEncoder().encode(c.origin).length])));
    assert.ok(c.transcript.includes("0020" + c.nonce));
    const sig = await rc.signJoin(unhex(c.adm_seed), ...args);
    assert.equal(hex(sig), c.sig);
    assert.equal(await rc.verifyJoin(unhex(c.adm_pk), sig, ...args), true);
    assert.equal(await rc.verifyJoin(unhex(c.adm_pk), sig, c.origin, c.room, unhex(c.nonce), c.conn + "x"), false);
    const bad = sig.slice();
    bad[5] ^= 1;
    assert.equal(await rc.verifyJoin(unhex(c.adm_pk), bad, ...args), false);
    assert.equal(await rc.verifyJoin(unhex(c.adm_pk), sig.subarray(0, 63), ...args), false);
    assert.equal(await rc.verifyJoin(new Uint8Array(32), new Uint8Array(64), ...args), false);
  }
});

test("envelope vectors: AAD, fixed-nonce ciphertext, open", async () => {
  for (const c of vectors.envelope) {
    const h = header(c.header);
    assert.equal(hex(h.aad()), c.aad);
    const kRoom = unhex(c.k_room);
    const { nonce, ciphertext } = await rc.seal(kRoom, h, unhex(c.plaintext), unhex(c.nonce));
    assert.equal(hex(nonce), c.nonce);
    assert.equal(hex(ciphertext), c.ciphertext);
    assert.equal(hex(await rc.openEnvelope(kRoom, h, unhex(c.nonce), unhex(c.ciphertext))), c.plaintext);
  }
});

test("seq as BigInt gives the same AAD as a safe integer", () => {
  const c = vectors.envelope[1];
  assert.equal(hex(header({ ...c.header, seq: BigInt(c.header.seq) }).aad()), c.aad);
  const top = header({ ...c.header, seq: 0xffffffffffffffffn }).aad();
  assert.equal(hex(top.subarray(top.length - 8)), "ffffffffffffffff");
});

test("JS seal with a random nonce opens; every tampering is rejected", async () => {
  const c = vectors.envelope[1];
  const kRoom = unhex(c.k_room);
  const h = header(c.header);
  const plaintext = new TextEncoder().encode("offer sdp ✓");
  const a = await rc.seal(kRoom, h, plaintext);
  const b = await rc.seal(kRoom, h, plaintext);
  assert.equal(a.nonce.length, 12);
  assert.notEqual(hex(a.nonce), hex(b.nonce));
  assert.equal(a.ciphertext.length, plaintext.length + 16);
  assert.deepEqual(await rc.openEnvelope(kRoom, h, a.nonce, a.ciphertext), plaintext);

  const changes = [
    { v: 2 }, { room: "lobby" }, { room: c.header.room + " " }, { epoch: 0 }, { epoch: c.header.epoch - 1 },
    { sender: "p-3" }, { to: "*" }, { to: "p-7" }, { seq: 0 }, { seq: c.header.seq - 1 },
  ];
  for (const change of changes) {
    await assert.rejects(rc.openEnvelope(kRoom, header({ ...c.header, ...change }), a.nonce, a.ciphertext),
      rc.InvalidEnvelope, JSON.stringify(change));
  }
  for (let i = 0; i < a.nonce.length * 8; i++) {
    const bad = a.nonce.slice();
    bad[i >> 3] ^= 1 << (i & 7);
    await assert.rejects(rc.openEnvelope(kRoom, h, bad, a.ciphertext), rc.InvalidEnvelope);
  }
  for (let i = 0; i < a.ciphertext.length * 8; i++) {
    const bad = a.ciphertext.slice();
    bad[i >> 3] ^= 1 << (i & 7);
    await assert.rejects(rc.openEnvelope(kRoom, h, a.nonce, bad), rc.InvalidEnvelope);
  }
  const malformed = [
    [new Uint8Array(32), a.nonce, a.ciphertext],
    [kRoom.subarray(0, 16), a.nonce, a.ciphertext],
    [kRoom, a.nonce.subarray(0, 11), a.ciphertext],
    [kRoom, new Uint8Array(0), a.ciphertext],
    [kRoom, a.nonce, a.ciphertext.subarray(0, a.ciphertext.length - 1)],
    [kRoom, a.nonce, new Uint8Array(15)],
    [kRoom, a.nonce, new Uint8Array(0)],
    [kRoom, a.nonce, "not bytes"],
    ["not bytes", a.nonce, a.ciphertext],
  ];
  for (const [key, nonce, ct] of malformed) {
    await assert.rejects(rc.openEnvelope(key, h, nonce, ct), rc.InvalidEnvelope);
  }
});

test("header refuses out-of-range fields and lone surrogates", () => {
  const base = { room: "r", epoch: 0, sender: "a", to: "*", seq: 0 };
  for (const change of [
    { epoch: -1 }, { epoch: 2 ** 32 }, { seq: -1 }, { seq: 2 ** 64 }, { seq: 2 ** 53 }, { seq: 1.5 },
    { seq: 2n ** 64n }, { v: 256 }, { room: "x".repeat(65536) }, { sender: "\udc80" }, { to: null },
  ]) {
    assert.throws(() => header({ ...base, ...change }), JSON.stringify(change, (_k, v) => typeof v === "bigint" ? `${v}n` : v));
  }
});

test("checkKdfParams refuses what the Python refuses", async () => {
  const salt = new Uint8Array(16).map((_v, i) => i);
  const ok = { alg: "argon2id13", ops: 2, mem: 64 * MIB, salt: "AAECAwQFBgcICQoLDA0ODw==" };
  assert.deepEqual(new rc.KdfParams({ salt }).toJson(), ok);
  rc.checkKdfParams(new rc.KdfParams({ salt, opslimit: 16, memlimit: 1024 * MIB }));
  const weak = [{ alg: "argon2i13" }, { alg: "scrypt" }, { opslimit: 1 }, { opslimit: 0 }, { memlimit: 64 * MIB - 1 }, { memlimit: 8192 }];
  for (const w of weak) {
    const p = new rc.KdfParams({ salt, ...w });
    assert.throws(() => rc.checkKdfParams(p), rc.WeakKdfParams);
    assert.throws(() => rc.KdfParams.fromJson(p.toJson()), rc.WeakKdfParams);
    await assert.rejects(rc.passwordKey("pw", p), rc.WeakKdfParams);
  }
  for (const x of [{ opslimit: 17 }, { memlimit: 1024 * MIB + 1 }, { opslimit: 1e9 }]) {
    const p = new rc.KdfParams({ salt, ...x });
    assert.throws(() => rc.checkKdfParams(p), rc.ExcessiveKdfParams);
    assert.throws(() => rc.KdfParams.fromJson(p.toJson()), rc.ExcessiveKdfParams);
    await assert.rejects(rc.passwordKey("pw", p), rc.ExcessiveKdfParams);
  }
  for (const bad of [new Uint8Array(0), new Uint8Array(15), new Uint8Array(17), "AAECAwQFBgcICQoLDA0ODw==", undefined]) {
    await assert.rejects(rc.passwordKey("pw", new rc.KdfParams({ salt: bad })), TypeError);
  }
  await assert.rejects(rc.passwordKey("pw", ok), TypeError); // the wire form is not parsed params
  const malformed = [
    null, [], "argon2id13", { alg: "argon2id13", ops: 2, salt: ok.salt },
    { alg: "argon2id13", ops: 2, mem: 64 * MIB }, { ...ok, p: 4 },
    { ...ok, ops: "2" }, { ...ok, ops: 2.5 }, { ...ok, ops: true }, { ...ok, alg: 13 },
    { ...ok, salt: [...salt] }, { ...ok, salt: hex(salt) },
  ];
  for (const m of malformed) assert.throws(() => rc.KdfParams.fromJson(m), TypeError, JSON.stringify(m));
});

test("base64: vectors and strict decoding", () => {
  for (const c of vectors.b64) {
    assert.equal(rc.b64(unhex(c.bytes)), c.text);
    assert.equal(hex(rc.unb64(c.text)), c.bytes);
  }
  for (const bad of ["Zg", "Zg=", "Zh==", "Zm9v\n", " Zm9v", "Zm9v====", "Zm-v", "Zm_v", "Zm9v=Zm9v", "é", 42]) {
    assert.throws(() => rc.unb64(bad), JSON.stringify(bad));
  }
  const big = new Uint8Array(100000).map((_v, i) => (i * 7) & 0xff);
  assert.deepEqual(rc.unb64(rc.b64(big)), big);
});

test("ReplayGuard: seq must grow per sender; commits never move back", () => {
  const g = new rc.ReplayGuard();
  assert.ok(g.check("a", 0) && g.check("a", 5));
  g.commit("a", 5);
  assert.ok(!g.check("a", 5) && !g.check("a", 4) && !g.check("a", 0));
  assert.ok(g.check("a", 6) && g.check("b", 1));
  g.commit("a", 3);
  assert.ok(!g.check("a", 4));
  g.commit("a", 2n ** 63n);
  assert.ok(!g.check("a", Number.MAX_SAFE_INTEGER) && g.check("a", 2n ** 63n + 1n));
  assert.equal(g.forget, undefined); // no way to reset a sender: ids are never reused
});

test("join_resume vectors: lp(resume_pk) appended, admission and resume signatures (PROTOCOL.md Resuming)", async () => {
  const sodium = (await import("../vendor/libsodium-wrappers-sumo.mjs")).default;
  await sodium.ready;
  for (const c of vectors.join_resume) {
    const args = [c.origin, c.room, unhex(c.nonce), c.conn];
    const pk = unhex(c.resume_pk);
    assert.equal(hex(rc.joinTranscript(...args, pk)), c.transcript);
    assert.equal(hex(rc.joinTranscript(...args)), c.transcript.slice(0, -2 * 34)); // v2 bytes kept
    assert.equal(hex(sodium.crypto_sign_seed_keypair(unhex(c.resume_seed)).publicKey), c.resume_pk);
    const sig = await rc.signJoin(unhex(c.adm_seed), ...args, pk);
    assert.equal(hex(sig), c.sig);
    assert.ok(await rc.verifyJoin(unhex(c.adm_pk), sig, ...args, pk));
    assert.ok(!(await rc.verifyJoin(unhex(c.adm_pk), sig, ...args)));
    if (c.resume_sig) {
      const rsig = await rc.signJoin(unhex(c.previous_resume_seed), ...args, pk);
      assert.equal(hex(rsig), c.resume_sig);
      assert.ok(await rc.verifyJoin(unhex(c.previous_resume_pk), rsig, ...args, pk));
    }
  }
  const a = await rc.newResumeKey();
  const b = await rc.newResumeKey();
  assert.equal(a.seed.length, 32);
  assert.notDeepEqual(a.publicKey, b.publicKey);
  assert.equal(hex(sodium.crypto_sign_seed_keypair(a.seed).publicKey), hex(a.publicKey));
});
