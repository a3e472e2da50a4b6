// node --test: a hostile signaling server and SFU against the real page modules.
//
// HostileServer speaks the signaling protocol (docs/PROTOCOL.md) to real SignalingClients
// (web/js/signaling.js) over an in-process socket, relays sealed envelopes like the real
// server, records every one of them, and can lie: fake `member-left` / `member-joined`,
// replayed or reordered envelopes, dropped messages, wrong sender indices. Each
// participant runs the real KeyManager (web/js/mediakeys.js) on the real worker state
// (e2ee-worker/worker.js). The "SFU" is this file handing frames that one participant's
// worker encrypted to another's decrypt transform — or withholding, replaying, forging
// and re-routing them. Every test is an attack of docs/SECURITY.md ("Attacks a hostile
// server can try") and fails if the attack works.
import assert from "node:assert/strict";
import { test } from "node:test";

import { KeyManager } from "../js/mediakeys.js";
import { b64 } from "../js/roomcrypto.js";
import { SignalingClient } from "../js/signaling.js";
import {
  concat, createWorkerState, GRACE_MS, HOLD_MS, importKid, makeKid, SendState,
} from "../../e2ee-worker/worker.js";

globalThis.WebSocket ??= { OPEN: 1 }; // signaling.js reads WebSocket.OPEN (Node 20 has none)

const ROOM = "hostile";
const PASSWORD = "correct horse battery staple";
const random = (n) => crypto.getRandomValues(new Uint8Array(n));
const VP8 = () => concat(Uint8Array.from([0x50, 0x43, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]), random(90));
const pause = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(predicate, what, ms = 10000) {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await pause(5);
  }
}

/** The client's end of a WebSocket; the server's end is HostileServer.receive. */
class Socket extends EventTarget {
  constructor(server) {
    super();
    this.server = server;
    this.readyState = 1;
    this.id = null; // the participant id the server gave it
  }

  send(text) {
    if (this.readyState === 1) this.server.receive(this, JSON.parse(text));
  }

  close() {
    this.readyState = 3;
  }

  /** Deliver one server message, after the ones queued before it (like a socket). */
  deliver(msg) {
    this.server.later(() => {
      if (this.readyState !== 1) return;
      const event = new Event("message");
      event.data = JSON.stringify({ v: 2, ...msg });
      this.dispatchEvent(event);
    });
  }
}

/** A signaling server that relays like the real one, records everything, and lies on demand. */
class HostileServer {
  constructor() {
    this.kdf = null; // the room record's KDF parameters (as its creator sent them)
    this.sockets = new Map(); // participant id → Socket
    this.nextIndex = 1;
    this.forceIndex = null; // the index to hand the next joiner instead of a fresh one
    this.log = []; // every sealed message relayed: {to: recipient id, msg}
    this.drop = () => false; // (msg, recipient id) → true to withhold a relayed envelope
    this.queue = Promise.resolve();
  }

  later(fn) {
    this.queue = this.queue.then(() => new Promise((resolve) => setImmediate(() => { fn(); resolve(); })));
  }

  connect() {
    const socket = new Socket(this);
    socket.deliver({ type: "challenge", conn: b64(random(9)), nonce: b64(random(32)) });
    return socket;
  }

  receive(socket, msg) {
    if (msg.type === "room-info") {
      socket.deliver({ type: "room-info", room: msg.room, exists: this.kdf !== null, ...(this.kdf && { kdf: this.kdf }) });
    } else if (msg.type === "join") {
      this.kdf ??= msg.create.kdf;
      const id = `p${Buffer.from(random(6)).toString("hex")}`;
      const index = this.forceIndex ?? this.nextIndex++;
      this.forceIndex = null;
      const members = [...this.sockets.values()].map((s) => ({ id: s.id, index: s.index }));
      Object.assign(socket, { id, index });
      socket.deliver({ type: "challenge", conn: b64(random(9)), nonce: b64(random(32)) });
      socket.deliver({ type: "joined", room: ROOM, id, index, members, kdf: this.kdf, lock: { locked: false }, ice_servers: [], sfu: false });
      for (const other of this.sockets.values()) other.deliver({ type: "member-joined", id, index });
      this.sockets.set(id, socket);
    } else if (msg.type === "seal") {
      const out = { type: "sealed", from: socket.id, to: msg.to, epoch: msg.epoch, seq: msg.seq, nonce: msg.nonce, ct: msg.ct };
      const targets = msg.to === "*" ? [...this.sockets.values()].filter((s) => s !== socket) : [this.sockets.get(msg.to)];
      for (const target of targets) {
        if (target === undefined) continue; // a fake member: nobody to relay to
        this.log.push({ to: target.id, msg: out });
        if (!this.drop(out, target.id)) target.deliver(out);
      }
    }
  }

  /** Send `msg` to participant `p` as if it were true. */
  tell(p, msg) {
    this.sockets.get(p.id).deliver(msg);
  }

  /** A real leave: the member is gone, everyone else is told. */
  leave(p) {
    p.keys.close();
    p.socket.close();
    this.sockets.delete(p.id);
    for (const other of this.sockets.values()) other.deliver({ type: "member-left", id: p.id, index: p.index, reason: "left" });
  }

  /** Every envelope relayed to `p`, in order (optionally only those from `from`). */
  recorded(p, from = null) {
    return this.log.filter((e) => e.to === p.id && (from === null || e.msg.from === from.id)).map((e) => e.msg);
  }
}

/** The page's E2ee (attach.js) backed by the worker's own state, with its own clock. */
function workerE2ee(now) {
  const state = createWorkerState({ post: () => {}, now });
  const sent = []; // every sending key this worker drew or ratcheted
  const call = async (msg) => {
    const reply = await state.handle(msg);
    if (reply?.type === "sendKey") sent.push(reply);
    return reply;
  };
  return {
    state, sent,
    setSendKey: (sender, generation = 0) => call({ type: "setSendKey", sender, generation }),
    setReceiveKey: (e) => call({ ...e, type: "setReceiveKey" }),
    ratchet: () => call({ type: "ratchet" }),
    rotate: () => call({ type: "rotate" }),
    switchKey: () => call({ type: "switchKey" }),
    removeParticipant: (participant) => call({ type: "removeParticipant", participant }),
  };
}

/** A participant: a real SignalingClient, KeyManager and worker state, joined through `server`. */
async function join(server, name, { debounceMs = 30, switchTimeoutMs = 400 } = {}) {
  const clock = { t: 0, real: true };
  const now = () => (clock.real ? performance.now() : clock.t);
  const socket = server.connect();
  const sig = new SignalingClient(socket);
  await until(() => sig.nonce !== null, "the challenge");
  await sig.join(ROOM, PASSWORD);
  const e2ee = workerE2ee(now);
  const keys = new KeyManager({ signaling: sig, e2ee, name, debounceMs, switchTimeoutMs });
  const p = { name, sig, socket, e2ee, keys, clock, events: [], sealed: [], id: sig.id, index: sig.index };
  for (const type of ["hello", "key-installed", "rotated", "rejected"]) {
    keys.addEventListener(type, ({ detail }) => p.events.push([type, detail, performance.now()]));
  }
  sig.addEventListener("sealed", ({ detail }) => p.sealed.push(detail.json()));
  await keys.start();
  return p;
}

const events = (p, type) => p.events.filter(([t]) => t === type).map(([, d]) => d);
const installed = (p, from) => events(p, "key-installed").filter((d) => d.participant === from.id).map((d) => d.generation);
const knows = (a, b) => installed(a, b).length > 0;

async function room(server, ...names) {
  const people = [];
  for (const name of names) people.push(await join(server, name));
  await until(() => people.every((a) => people.every((b) => a === b || knows(a, b))), "everyone's keys");
  return people;
}

/** `from`'s worker encrypts a frame; `to`'s worker decrypts it as a frame of `as`'s track. */
const frameOf = (from, kind = "video") => from.e2ee.state.send.encrypt(kind, kind === "video" ? VP8() : concat(Uint8Array.of(0x78), random(40)));
const open = (to, as, frame, kind = "video") => to.e2ee.state.receive.decrypt(kind, as?.id ?? null, frame);
const opens = async (to, as, frame, kind) => Boolean((await open(to, as, frame, kind)).ok);

function close(...people) {
  for (const p of people) p.keys.close();
}

// ---------------------------------------------------------------------------- attacks

test("fake leave + rejoin under the same id, then replayed hello, keys and chat: all refused", async () => {
  const server = new HostileServer();
  const [alice, vic] = await room(server, "Alice", "Vic");
  await vic.sig.seal("*", { type: "chat", text: "the plan" });
  const old = [await frameOf(vic), await frameOf(vic)];
  for (const f of old) assert.ok(await opens(alice, vic, f));
  // A member leaves for real: Vic rotates away the key Carol saw (generation 1).
  const carol = await join(server, "Carol");
  await until(() => knows(carol, vic) && knows(vic, carol), "Carol's keys");
  server.leave(carol);
  await until(() => events(alice, "rotated").length === 1 && events(vic, "rotated").length === 1, "both rotations");
  await until(() => installed(alice, vic).includes(1) && installed(vic, alice).includes(1), "generation 1 both ways");
  await pause(50); // the last acks land
  const before = { installed: installed(alice, vic), sealed: alice.sealed.length };
  assert.equal(alice.sealed.filter((m) => m.type === "chat").length, 1);

  // The attack: Vic "left", "came back" with the same id and index, and said it all again.
  const replay = server.recorded(alice, vic);
  server.tell(alice, { type: "member-left", id: vic.id, index: vic.index, reason: "left" });
  server.tell(alice, { type: "member-joined", id: vic.id, index: vic.index });
  for (const msg of replay) server.tell(alice, msg);
  await until(() => (alice.sig.refused.replay ?? 0) === replay.length, "every replay refused");

  assert.equal(alice.sig.refused.rejoin, 1);
  assert.equal(alice.sealed.length, before.sealed); // no hello, key or chat was accepted twice
  assert.deepEqual(installed(alice, vic), before.installed);
  for (const f of old) assert.ok(!(await opens(alice, vic, f)), "an old frame of Vic's played again");
  // Even asked directly by the page, the worker refuses every key Vic ever had.
  for (const key of vic.e2ee.sent) {
    const reply = await alice.e2ee.setReceiveKey({ participant: vic.id, ...key });
    assert.deepEqual([reply.type, reply.reason], ["receiveKeyRefused", "removed"]);
  }
  close(alice, vic);
});

test("the page alone: a replayed, rotated-away media key is refused even when its envelope is fresh", async () => {
  // A colluding password holder can re-seal an old media-key message in a fresh envelope
  // (new seq), so the envelope replay guard does not see it: the key policy must.
  const server = new HostileServer();
  const [alice, vic] = await room(server, "Alice", "Vic");
  const carol = await join(server, "Carol");
  await until(() => knows(carol, vic) && knows(vic, carol), "Carol's keys");
  const first = server.recorded(alice, vic).find((m) => m.seq === Math.min(...server.recorded(alice, vic).map((x) => x.seq)));
  server.leave(carol);
  await until(() => installed(alice, vic).includes(1), "generation 1");
  // Re-deliver generation 0's key message with a seq above everything Vic sent so far.
  const keyMessages = server.recorded(alice, vic);
  const seq = Math.max(...keyMessages.map((m) => m.seq)) + 1;
  // The envelope's AAD binds seq, so a new seq needs a new seal: done with Vic's own client,
  // playing the colluding insider who re-sends a genuine old media-key body.
  const oldKey = vic.e2ee.sent.find((k) => k.generation === 0);
  const { makeMediaKey } = await import("../js/mediakeys.js");
  const peer = vic.keys.peers.get(alice.id);
  const body = await makeMediaKey(vic.keys.identity, ROOM, vic.id, peer, oldKey);
  await vic.sig.seal(alice.id, body);
  await until(() => events(alice, "rejected").some((d) => d.reason === "stale-key"), "the refusal");
  assert.ok(seq > first.seq);
  assert.deepEqual(installed(alice, vic).filter((g) => g === 0).length, 1);
  const reply = await alice.e2ee.setReceiveKey({ participant: vic.id, ...oldKey });
  assert.deepEqual([reply.type, reply.reason], ["receiveKeyRefused", "old-key"]);
  close(alice, vic);
});

test("every recorded envelope replayed, and envelopes reordered: refused, nothing happens twice", async () => {
  const server = new HostileServer();
  const [alice, bob] = await room(server, "Alice", "Bob");
  await bob.sig.seal("*", { type: "chat", text: "one" });
  await bob.sig.seal("*", { type: "state", audio: false, video: true });
  await until(() => alice.sealed.length >= 4, "hello, key, chat, state");
  const seen = alice.sealed.length;
  const all = server.recorded(alice);
  for (const msg of all) server.tell(alice, msg);
  await until(() => (alice.sig.refused.replay ?? 0) === all.length, "all replays refused");
  assert.equal(alice.sealed.length, seen);

  // Reordered: the later envelope arrives first; the earlier one is then refused.
  server.drop = (msg, to) => to === alice.id;
  await bob.sig.seal("*", { type: "chat", text: "first" });
  await bob.sig.seal("*", { type: "chat", text: "second" });
  const [first, second] = server.recorded(alice, bob).slice(-2);
  server.tell(alice, second);
  server.tell(alice, first);
  await until(() => alice.sig.refused.replay === all.length + 1, "the late one refused");
  assert.deepEqual(alice.sealed.slice(seen).map((m) => m.text), ["second"]);
  close(alice, bob);
});

test("a departed member's copy of the previous key stops working a grace period after the switch", async () => {
  const server = new HostileServer();
  const [alice, vic, dave] = await room(server, "Alice", "Vic", "Dave");
  // Dave keeps everything his worker held, as a malicious member would.
  const held = dave.e2ee.state.receive.senders.get(vic.index).generations.get(0);
  const forger = new SendState();
  forger.current = {
    sender: vic.index, generation: 0, step: held.step, base: held.base,
    keys: await importKid(held.base, makeKid(vic.index, 0, held.step)),
  };
  forger.counter = 1_000_000n; // above Vic's counter: the replay window does not stop it
  server.leave(dave);
  await until(() => installed(alice, vic).includes(1) && events(vic, "rotated").length === 1, "the rotation");
  alice.clock.t = 0;
  alice.clock.real = false; // Alice's worker now runs on a test clock
  // Until Vic's first frame under generation 1 arrives, generation 0 is still his working
  // key at Alice (frames in flight): this is the documented window.
  assert.ok(await opens(alice, vic, await forger.encrypt("video", VP8())));
  assert.ok(await opens(alice, vic, await frameOf(vic)));
  alice.clock.t += GRACE_MS - 1;
  assert.ok(await opens(alice, vic, await forger.encrypt("video", VP8())), "frames in flight still decrypt");
  alice.clock.t += 1;
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(await open(alice, vic, await forger.encrypt("video", VP8())), { reject: "stale-key" });
    alice.clock.t += 60_000;
  }
  assert.ok(await opens(alice, vic, await frameOf(vic)));
  close(alice, vic);
});

test("fake leaves for members who never were cannot postpone the rotation after a real leave", async () => {
  const server = new HostileServer();
  const [alice, vic, dave] = await room(server, "Alice", "Vic", "Dave");
  server.leave(dave);
  // Every 20 ms, for 1.5 s, a `member-left` for an id that was never in the room.
  let flooding = true;
  const flood = (async () => {
    for (let i = 0; i < 75; i++) {
      server.tell(vic, { type: "member-left", id: `p${String(i).padStart(12, "f")}`, index: 900 + i, reason: "left" });
      await pause(20);
    }
    flooding = false;
  })();
  // Bound: debounce (30 ms) + every ack or the 400 ms timeout; well inside the flood.
  await until(() => events(vic, "rotated").length === 1 || !flooding, "Vic's rotation");
  assert.equal(events(vic, "rotated").length, 1, "the rotation waited for the fake leaves to stop");
  assert.ok(flooding);
  await flood;
  assert.equal(vic.sig.refused["not-a-member"], 75);
  assert.ok(await opens(alice, vic, await frameOf(vic)));
  close(alice, vic);
});

test("a leave while a rotation waits for acks (dropped by the server) does not cancel it, and gets its own", async () => {
  const server = new HostileServer();
  const [alice, vic, dave, erin] = await room(server, "Alice", "Vic", "Dave", "Erin");
  const erinHeld = () => [...erin.e2ee.state.receive.senders.get(vic.index).generations.keys()];
  server.drop = (msg, to) => to === vic.id; // no ack (nor anything else) reaches Vic
  server.leave(dave);
  await until(() => installed(erin, vic).includes(1), "generation 1 at Erin (pending at Vic)");
  server.leave(erin); // Erin leaves holding the pending generation 1
  await until(() => events(vic, "rotated").length === 2, "two rotations");
  assert.deepEqual(events(vic, "rotated").map((d) => d.generation), [1, 2]);
  await until(() => installed(alice, vic).includes(2), "generation 2 at Alice");
  const g2 = await frameOf(vic);
  assert.ok(await opens(alice, vic, g2));
  assert.ok(!erinHeld().includes(2));
  assert.ok(!(await opens(erin, vic, g2)), "Erin reads what Vic sends after her leave");
  close(alice, vic);
});

test("fake joins that reuse an index or an id are refused; a member cannot take another's sender index", async () => {
  const server = new HostileServer();
  const [alice, vic] = await room(server, "Alice", "Vic");
  server.tell(alice, { type: "member-joined", id: "p0123456789ab", index: vic.index });
  server.tell(alice, { type: "member-joined", id: vic.id, index: 77 });
  server.tell(alice, { type: "member-joined", id: alice.id, index: 78 });
  await until(() => alice.sig.refused.rejoin === 2 && alice.sig.refused["index-reused"] === 1, `refusals ${JSON.stringify(alice.sig.refused)}`, 2000);
  // A colluding password holder joins with Vic's sender index (the server lies to it too).
  server.forceIndex = vic.index;
  const mallory = await join(server, "Mallory");
  await until(() => alice.sig.refused["index-reused"] === 2, "Mallory's join refused at Alice");
  await until(() => events(alice, "rejected").some((d) => d.sender === mallory.id), "Mallory's hello refused");
  assert.ok(!alice.keys.peers.has(mallory.id));
  assert.deepEqual(installed(alice, mallory), []);
  const key = mallory.e2ee.sent[0];
  const reply = await alice.e2ee.setReceiveKey({ participant: mallory.id, ...key });
  assert.deepEqual([reply.type, reply.reason], ["receiveKeyRefused", "sender-taken"]);
  assert.ok(await opens(alice, vic, await frameOf(vic)));
  mallory.e2ee.state.send.counter = 1_000_000n; // fresh counters: the replay window does not stop it
  const forged = await frameOf(mallory);
  assert.deepEqual(await open(alice, vic, forged), { reject: "auth-failed" }); // Vic's KID, not Vic's key
  close(alice, vic, mallory);
});

test("a burst of fake joins while the SFU withholds a sender's frames: the receiver follows by itself", async () => {
  const server = new HostileServer();
  const [alice, vic] = await room(server, "Alice", "Vic");
  assert.ok(await opens(alice, vic, await frameOf(vic)));
  const before = vic.e2ee.sent.length;
  for (let i = 0; i < 40; i++) { // 40 joins, each between two frames Alice never gets
    server.tell(vic, { type: "member-joined", id: `p${String(i).padStart(12, "e")}`, index: 500 + i });
    await until(() => vic.e2ee.sent.length === before + i + 1, "Vic's ratchet");
    await frameOf(vic);
  }
  assert.ok(vic.e2ee.state.send.current.step >= 40);
  assert.ok(await opens(alice, vic, await frameOf(vic)));
  assert.ok(await opens(alice, vic, await frameOf(vic, "audio"), "audio"));
  close(alice, vic);
});

test("step 255 while a rotation is pending: the pending key is used, never replaced", async () => {
  const server = new HostileServer();
  const [alice, dave] = await room(server, "Alice", "Dave");
  const vic = await join(server, "Vic", { switchTimeoutMs: 60000 });
  await until(() => knows(alice, vic) && knows(vic, alice) && knows(vic, dave), "Vic's keys");
  let fake = 0;
  const fakeJoins = (n) => {
    for (let i = 0; i < n; i++, fake++) server.tell(vic, { type: "member-joined", id: `p${String(fake).padStart(12, "d")}`, index: 1000 + fake });
  };
  server.drop = (msg, to) => to === vic.id; // Alice's ack never reaches Vic: the rotation stays pending
  server.leave(dave);
  await until(() => installed(alice, vic).includes(1), "Vic's pending generation 1 at Alice");
  fakeJoins(255 - vic.e2ee.state.send.current.step);
  await until(() => vic.e2ee.state.send.current.step === 255, "Vic at step 255 of generation 0");
  assert.equal(vic.e2ee.state.send.pending.generation, 1);
  fakeJoins(1); // step exhausted while generation 1 is pending
  await until(() => vic.e2ee.state.send.current.generation === 1, "Vic's switch");
  assert.deepEqual(events(vic, "rotated").map((d) => d.generation), [1]);
  assert.equal(vic.e2ee.state.send.current.step, 1); // the pending key, ratcheted for the newcomer
  assert.equal(vic.e2ee.state.send.pending, null);
  assert.ok(await opens(alice, vic, await frameOf(vic)));
  assert.deepEqual(installed(alice, vic), [0, 1]); // one key per generation, none replaced

  // Step 255 with no rotation pending: a new generation at once, sent to everyone.
  fakeJoins(254);
  await until(() => vic.e2ee.state.send.current.step === 255, "step 255 of generation 1");
  fakeJoins(1);
  await until(() => installed(alice, vic).includes(2), "generation 2 at Alice");
  assert.ok(await opens(alice, vic, await frameOf(vic)));
  assert.deepEqual(alice.e2ee.state.stats.refused, {});
  assert.deepEqual(events(alice, "rejected"), []);
  close(alice, vic);
});

test("swapped or stale track maps cannot show one member's frames as another's", async () => {
  const server = new HostileServer();
  const [alice, vic, walt, dave] = await room(server, "Alice", "Vic", "Walt", "Dave");
  const daveFrame = await frameOf(dave);
  server.leave(dave);
  await until(() => installed(alice, vic).includes(1), "the rotation after Dave left");
  // The page attaches one decrypt transform per receiver, with the participant the SFU's
  // `tracks` map named: here the SFU swapped Vic's and Walt's MIDs, re-sent an old map that
  // still names Dave, and left one MID out of the map (participant null).
  const outputs = new Map();
  const push = new Map();
  for (const as of [vic, walt, dave, null]) {
    const input = new TransformStream();
    const out = [];
    alice.e2ee.state.attach({
      operation: "decrypt", kind: "video", participant: as?.id ?? null,
      readable: input.readable, writable: new WritableStream({ write: (f) => void out.push(f) }),
    });
    outputs.set(as, out);
    push.set(as, input.writable.getWriter());
  }
  const sent = [[vic, walt, await frameOf(walt)], [walt, vic, await frameOf(vic)],
    [dave, vic, await frameOf(vic)], [dave, dave, daveFrame], [null, vic, await frameOf(vic)]];
  for (const [track, , frame] of sent) await push.get(track).write({ data: frame.slice().buffer, getMetadata: () => ({}) });
  await until(() => alice.e2ee.state.stats.frames >= sent.length, "the transforms");
  alice.e2ee.state.stats.frames = 0;
  for (const [as, out] of outputs) assert.deepEqual(out, [], `frames shown on ${as?.name ?? "an unmapped"} tile`);
  const dropped = alice.e2ee.state.stats.dropped;
  assert.equal(dropped["wrong-sender"], 3);
  assert.equal(dropped.unmapped, 1);
  // Dave's own frame on Dave's stale tile: his keys are gone, it waits and is dropped.
  await pause(HOLD_MS + 50);
  await push.get(dave).write({ data: (await frameOf(vic)).slice().buffer, getMetadata: () => ({}) });
  await until(() => (dropped["unknown-kid"] ?? 0) === 1, "the held frame dropped");
  assert.deepEqual(outputs.get(dave), []);
  close(alice, vic, walt);
});

test("a leave right after an early step-255 switch still gets its rotation", async () => {
  const server = new HostileServer();
  const [alice, dave, erin] = await room(server, "Alice", "Dave", "Erin");
  const vic = await join(server, "Vic", { switchTimeoutMs: 2000 });
  await until(() => [alice, dave, erin].every((p) => knows(p, vic) && knows(vic, p)), "Vic's keys");
  server.drop = (msg, to) => to === vic.id; // acks withheld: Vic's rotation stays pending
  server.leave(dave);
  await until(() => installed(erin, vic).includes(1), "pending generation 1 at Erin");
  const joins = 256 - vic.e2ee.state.send.current.step; // to step 255, then one more
  for (let i = 0; i < joins; i++) server.tell(vic, { type: "member-joined", id: `p${String(i).padStart(12, "d")}`, index: 1000 + i });
  await until(() => vic.e2ee.state.send.current.generation === 1, "Vic's early switch");
  server.leave(erin); // she holds generation 1
  // Bound (PROTOCOL.md): debounce + switch timeout, no rotation being pending any more.
  await until(() => events(vic, "rotated").length === 2, "a rotation for Erin's leave", 2030 + 1000);
  assert.ok(!(await opens(erin, vic, await frameOf(vic))));
  close(alice, vic);
});
