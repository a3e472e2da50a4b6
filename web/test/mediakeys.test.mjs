// node --test: web/js/mediakeys.js against tests/vectors/mediakeys.json (shared with
// tests/test_mediakeys.py), refusals, and the KeyManager protocol with several participants
// on an in-process relay whose e2ee is the real worker state (e2ee-worker/worker.js).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import * as mk from "../js/mediakeys.js";
import { b64, unb64 } from "../js/roomcrypto.js";
import { createWorkerState } from "../../e2ee-worker/worker.js";

const root = new URL("../../", import.meta.url);
const V = JSON.parse(readFileSync(new URL("tests/vectors/mediakeys.json", root), "utf8"));
const ROOM = V.room;
const hex = (u8) => Buffer.from(u8).toString("hex");
const unhex = (h) => new Uint8Array(Buffer.from(h, "hex"));
const member = (id) => V.members.find((m) => m.id === id);
const identity = (id) => mk.Identity.fromSecrets(unhex(member(id).sign_seed), unhex(member(id).box_sk));
const peer = (id) => {
  const m = member(id);
  return { id, name: m.name, index: m.index, signPk: unhex(m.sign_pk), boxPk: unhex(m.box_pk) };
};
const flip = (text, at = 0) => {
  const data = unb64(text);
  data[at] ^= 1;
  return b64(data);
};

async function reason(promise) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof mk.Rejected, `not a Rejected: ${error}`);
    return error.reason;
  }
  assert.fail("accepted");
}

// ------------------------------------------------------------------------------- vectors

test("identities: public keys from the secrets", async () => {
  for (const m of V.members) {
    const me = await identity(m.id);
    assert.equal(hex(me.signPk), m.sign_pk);
    assert.equal(hex(me.boxPk), m.box_pk);
    assert.ok(!JSON.stringify(me).includes(m.sign_seed) && !JSON.stringify(me).includes(m.box_sk));
  }
});

test("hello vectors: same transcript, same signed message, verified", async () => {
  for (const h of V.hellos) {
    const m = member(h.id);
    const me = await identity(h.id);
    assert.equal(hex(mk.helloTranscript(ROOM, h.id, m.index, me.signPk, me.boxPk, m.name)), h.transcript);
    assert.deepEqual(await mk.makeHello(me, ROOM, h.id, m.index, m.name), h.message);
    assert.deepEqual(await mk.verifyHello(h.message, ROOM, h.id, m.index), peer(h.id));
  }
});

test("media-key vectors: same box and signature, opened, acked", async () => {
  for (const k of V.media_keys) {
    const from = await identity(k.from);
    const key = { sender: k.index, generation: k.generation, step: k.step, key: unhex(k.key) };
    const msg = await mk.makeMediaKey(from, ROOM, k.from, peer(k.to), key, unhex(k.nonce));
    assert.deepEqual(msg, k.message);
    assert.equal(hex(mk.mediaKeyTranscript(ROOM, k.from, k.to, k.index, k.generation, k.step,
      unhex(k.nonce), unb64(msg.box))), k.transcript);
    const opened = await mk.openMediaKey(k.message, await identity(k.to), ROOM, k.to, peer(k.from));
    assert.deepEqual(opened, { key, nonce: unhex(k.nonce) });
    const ack = await mk.makeAck(await identity(k.to), ROOM, k.to, k.from, k.generation, k.step, unhex(k.nonce));
    assert.deepEqual(ack, k.ack);
    assert.equal(hex(mk.ackTranscript(ROOM, k.to, k.from, k.generation, k.step, unhex(k.nonce))), k.ack_transcript);
    assert.deepEqual(await mk.verifyAck(k.ack, ROOM, k.from, peer(k.to)),
      { generation: k.generation, step: k.step, nonce: unhex(k.nonce) });
  }
});

test("security code vectors", async () => {
  for (const c of V.security_codes) {
    assert.equal(await mk.securityCode(ROOM, c.members.map(peer)), c.code);
    assert.match(c.code, /^\d{5} \d{5} \d{5} \d{5} \d{5}$/);
  }
});

// ------------------------------------------------------------------------------ refusals

test("hello refusals", async () => {
  const h = V.hellos[1];
  const msg = h.message;
  assert.equal(await reason(mk.verifyHello(msg, ROOM, "p000000000000", 2)), "wrong-sender");
  assert.equal(await reason(mk.verifyHello(msg, ROOM, h.id, 3)), "wrong-index");
  assert.equal(await reason(mk.verifyHello(msg, ROOM, h.id, undefined)), "unknown-member");
  assert.equal(await reason(mk.verifyHello(msg, ROOM + "x", h.id, 2)), "bad-signature");
  for (const field of ["sig", "sign_pk", "box_pk"]) {
    assert.equal(await reason(mk.verifyHello({ ...msg, [field]: flip(msg[field], 7) }, ROOM, h.id, 2)), "bad-signature");
  }
  assert.equal(await reason(mk.verifyHello({ ...msg, name: "Mallory" }, ROOM, h.id, 2)), "bad-signature");
  for (const bad of [{ ...msg, v: 2 }, { ...msg, index: "2" }, { ...msg, sig: "!!" }, { ...msg, name: "\ud800" },
    { ...msg, name: "x".repeat(101) }, { ...msg, box_pk: b64(new Uint8Array(31)) }]) {
    assert.ok(["malformed", "unsupported-version"].includes(await reason(mk.verifyHello(bad, ROOM, h.id, 2))));
  }
});

test("media-key refusals: tampering, wrong sender, wrong recipient, bad box", async () => {
  const k = V.media_keys[0];
  const msg = k.message;
  const me = await identity(k.to);
  const open = (m, who = peer(k.from), to = k.to, id = me) => reason(mk.openMediaKey(m, id, ROOM, to, who));
  for (const field of ["sig", "box", "nonce"]) assert.equal(await open({ ...msg, [field]: flip(msg[field], 3) }), "bad-signature");
  assert.equal(await open({ ...msg, generation: msg.generation + 1 }), "bad-signature");
  const carol = peer(V.members[2].id);
  assert.equal(await open(msg, carol), "wrong-index");
  assert.equal(await open(msg, { ...carol, index: peer(k.from).index }), "bad-signature");
  assert.equal(await open(msg, peer(k.from), carol.id, await identity(carol.id)), "bad-signature");
  const alice = await identity(k.from);
  const badBox = flip(msg.box, 5);
  const t = mk.mediaKeyTranscript(ROOM, k.from, k.to, k.index, k.generation, k.step, unb64(msg.nonce), unb64(badBox));
  assert.equal(await open({ ...msg, box: badBox, sig: b64(alice.sign(t)) }), "bad-box");
  const ack = k.ack;
  assert.equal(await reason(mk.verifyAck({ ...ack, sig: flip(ack.sig) }, ROOM, k.from, peer(k.to))), "bad-signature");
  assert.equal(await reason(mk.verifyAck(ack, ROOM, k.from, carol)), "bad-signature");
});

// ------------------------------------------------------------------------------ protocol

/** A relay like the signaling server: ordered delivery, membership events, indices. */
class Relay {
  constructor(room) {
    this.room = room;
    this.clients = new Map();
    this.nextIndex = 1;
    this.queue = Promise.resolve();
  }

  later(fn) {
    this.queue = this.queue.then(() => new Promise((resolve) => setImmediate(() => { fn(); resolve(); })));
  }

  join() {
    const index = this.nextIndex++;
    const id = `p${String(index).padStart(12, "0")}`;
    const client = new FakeClient(this, id, index);
    for (const other of this.clients.values()) {
      client.members.set(other.id, other.index);
      other.members.set(id, index);
      this.later(() => other.dispatchEvent(new CustomEvent("member-joined", { detail: { id, index } })));
    }
    this.clients.set(id, client);
    return client;
  }

  leave(client) {
    this.clients.delete(client.id);
    for (const other of this.clients.values()) {
      other.members.delete(client.id);
      this.later(() => other.dispatchEvent(new CustomEvent("member-left", { detail: { id: client.id, index: client.index } })));
    }
  }

  deliver(from, to, payload) {
    const targets = to === "*" ? [...this.clients.values()].filter((c) => c.id !== from) : [this.clients.get(to)];
    const data = new TextEncoder().encode(JSON.stringify(payload));
    for (const target of targets) {
      if (target === undefined || (target.mute ?? false)) continue;
      const detail = { sender: from, to, payload: data, json: () => JSON.parse(new TextDecoder().decode(data)) };
      this.later(() => target.dispatchEvent(new CustomEvent("sealed", { detail })));
    }
  }
}

class FakeClient extends EventTarget {
  constructor(relay, id, index) {
    super();
    Object.assign(this, { relay, id, index, room: relay.room, members: new Map(), silent: false });
  }

  async seal(to, payload) {
    if (!this.silent) this.relay.deliver(this.id, to, payload);
  }
}

/** The page's E2ee (attach.js) backed directly by the worker's state, as in the worker. */
function workerE2ee() {
  const state = createWorkerState({ post: () => {} });
  const call = (msg) => state.handle(msg);
  return {
    state,
    setSendKey: (sender, generation = 0) => call({ type: "setSendKey", sender, generation }),
    setReceiveKey: (e) => call({ type: "setReceiveKey", ...e }),
    ratchet: () => call({ type: "ratchet" }),
    rotate: () => call({ type: "rotate" }),
    switchKey: () => call({ type: "switchKey" }),
    removeParticipant: (participant) => call({ type: "removeParticipant", participant }),
  };
}

const FRAME = Uint8Array.from([0x50, 0x43, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, ...new Array(100).fill(7)]);

async function participant(relay, name, options = {}) {
  const signaling = relay.join();
  const e2ee = workerE2ee();
  const keys = new mk.KeyManager({ signaling, e2ee, name, debounceMs: 20, switchTimeoutMs: 60000, ...options });
  const p = { signaling, e2ee, keys, name, events: [], keyframes: 0 };
  for (const type of ["hello", "security-code", "key-installed", "rotated", "rejected"]) {
    keys.addEventListener(type, ({ detail }) => p.events.push([type, detail]));
  }
  keys.onKeyFrameNeeded = () => { p.keyframes++; };
  await keys.start();
  return p;
}

const installed = (p, from) => p.events.filter(([t, d]) => t === "key-installed" && d.participant === from.signaling.id)
  .map(([, d]) => [d.generation, d.step]);

async function until(predicate, what, ms = 10000) {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const encrypt = (p) => p.e2ee.state.send.encrypt("video", FRAME);
const decrypt = (p, from, frame) => p.e2ee.state.receive.decrypt("video", from.signaling.id, frame);

test("KeyManager: hellos, join ratchet to the newcomer only, leave rotation after acks", async () => {
  const relay = new Relay("room-1");
  const alice = await participant(relay, "Alice");
  const bob = await participant(relay, "Bob");
  await until(() => installed(bob, alice).length && installed(alice, bob).length, "the first keys");
  assert.deepEqual(installed(bob, alice), [[0, 1]]); // Alice ratcheted for Bob
  assert.deepEqual(installed(alice, bob), [[0, 0]]);
  assert.equal(alice.keys.peers.get(bob.signaling.id).name, "Bob");
  assert.equal(alice.keys.securityCode, bob.keys.securityCode);
  const before = await encrypt(alice);
  assert.ok((await decrypt(bob, alice, before)).ok);

  const carol = await participant(relay, "Carol");
  await until(() => installed(carol, alice).length && installed(carol, bob).length
    && installed(alice, carol).length && installed(bob, carol).length, "Carol's keys");
  assert.deepEqual(installed(carol, alice), [[0, 2]]);
  assert.deepEqual(installed(bob, alice), [[0, 1]]); // no key message for the ratchet
  const three = new Set([alice, bob, carol].map((p) => p.keys.securityCode));
  assert.equal(three.size, 1);
  const after = await encrypt(alice);
  assert.ok((await decrypt(bob, alice, after)).ok); // Bob follows by himself
  assert.ok((await decrypt(carol, alice, after)).ok);
  assert.deepEqual(await decrypt(carol, alice, before), { reject: "step-out-of-range" });

  const lastForBob = await encrypt(alice);
  relay.leave(bob.signaling);
  bob.keys.close();
  await until(() => alice.events.some(([t]) => t === "rotated") && carol.events.some(([t]) => t === "rotated"), "rotations");
  assert.deepEqual(alice.events.filter(([t]) => t === "rotated").map(([, d]) => d), [{ generation: 1 }]);
  assert.equal(alice.keyframes, 1);
  assert.equal(carol.keyframes, 1);
  assert.equal(alice.keys.securityCode, carol.keys.securityCode);
  assert.ok(!three.has(alice.keys.securityCode));
  const rotated = await encrypt(alice);
  assert.ok((await decrypt(carol, alice, rotated)).ok);
  assert.ok((await decrypt(bob, alice, lastForBob)).ok); // Bob's keys worked until he left
  assert.deepEqual(await decrypt(bob, alice, rotated), { hold: true }); // gen 1: never arrives
  for (const p of [alice, carol]) assert.deepEqual(p.events.filter(([t]) => t === "rejected"), []);
  for (const p of [alice, carol]) p.keys.close();
});

test("KeyManager: switches after the timeout without acks; ignores chat; refuses forgeries", async () => {
  const relay = new Relay("room-2");
  const alice = await participant(relay, "Alice", { switchTimeoutMs: 50 });
  const bob = await participant(relay, "Bob");
  const carol = await participant(relay, "Carol");
  await until(() => installed(carol, alice).length && installed(alice, carol).length, "keys");
  carol.signaling.silent = true; // Carol stops sending: no acks
  relay.deliver(bob.signaling.id, "*", { type: "chat", text: "hi" });
  relay.deliver(bob.signaling.id, alice.signaling.id, { ...V.media_keys[0].message });
  relay.leave(bob.signaling);
  bob.keys.close();
  await until(() => alice.events.some(([t]) => t === "rotated"), "a rotation without acks");
  await until(() => installed(carol, alice).some(([g]) => g === 1), "Carol's new key");
  assert.ok((await decrypt(carol, alice, await encrypt(alice))).ok);
  const rejected = alice.events.filter(([t]) => t === "rejected").map(([, d]) => d.reason);
  assert.deepEqual(rejected, ["wrong-index"]); // a replayed key of another sender index
  for (const p of [alice, carol]) p.keys.close();
});

test("KeyManager: events before start() are kept and handled in order", async () => {
  const relay = new Relay("room-3");
  const alice = await participant(relay, "Alice");
  const signaling = relay.join();
  const keys = new mk.KeyManager({ signaling, e2ee: workerE2ee(), name: "Late" });
  await new Promise((r) => setTimeout(r, 50)); // Alice's hello arrives before start()
  const hellos = [];
  keys.addEventListener("hello", ({ detail }) => hellos.push(detail));
  await keys.start();
  await until(() => hellos.length === 1, "Alice's hello");
  assert.deepEqual(hellos, [{ id: alice.signaling.id, name: "Alice" }]);
  await until(() => installed(alice, { signaling }).length === 1, "Late's key at Alice");
  keys.close();
  alice.keys.close();
});
