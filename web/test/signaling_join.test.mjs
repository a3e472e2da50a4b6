// node --test: web/js/signaling.js join() against a scripted server (no network): protocol
// version 2, the kdf record with the creator's random salt, expectKdf → "kdf-changed" before
// anything is derived, and a lost creation race retried as a plain join (docs/PROTOCOL.md).
import assert from "node:assert/strict";
import { test } from "node:test";

import { KdfParams, b64, unb64 } from "../js/roomcrypto.js";
import { PROTOCOL_VERSION, ServerError, SignalingClient } from "../js/signaling.js";

/** A WebSocket stand-in: records what the client sends, answers through `script`. */
class ScriptedSocket extends EventTarget {
  readyState = 1;
  sent = [];

  constructor(script) {
    super();
    this.script = script;
  }

  send(text) {
    const msg = JSON.parse(text);
    this.sent.push(msg);
    queueMicrotask(() => this.script(msg, this));
  }

  reply(msg) {
    const ev = new Event("message");
    ev.data = JSON.stringify({ v: 2, ...msg });
    this.dispatchEvent(ev);
  }

  challenge() {
    this.reply({ type: "challenge", conn: "c-1", nonce: b64(globalThis.crypto.getRandomValues(new Uint8Array(32))) });
  }

  close() {}
}

const JOINED = { type: "joined", room: "r", id: "p000000000001", index: 1, members: [], lock: {}, ice_servers: [], sfu: false };

function client(script) {
  const ws = new ScriptedSocket(script);
  const sig = new SignalingClient(ws);
  ws.challenge();
  return { ws, sig };
}

test("version 2 on every message", () => {
  assert.equal(PROTOCOL_VERSION, 2);
  const { ws, sig } = client(() => {});
  sig.send({ type: "ping", t: 1 });
  assert.deepEqual(ws.sent, [{ v: 2, type: "ping", t: 1 }]);
});

test("creating a room sends exactly {alg, ops, mem, salt} with a fresh 16-byte salt", async () => {
  const { ws, sig } = client((msg, sock) => {
    if (msg.type === "room-info") sock.reply({ type: "room-info", room: "r", exists: false });
    if (msg.type === "join") { sock.challenge(); sock.reply({ ...JOINED, kdf: msg.create.kdf }); }
  });
  await sig.join("r", "pw");
  const kdf = ws.sent.find((m) => m.type === "join").create.kdf;
  assert.deepEqual(Object.keys(kdf), ["alg", "ops", "mem", "salt"]);
  assert.equal(unb64(kdf.salt).length, 16);
  assert.deepEqual(sig.kdf.toJson(), kdf);
});

test("expectKdf: a different salt is refused with kdf-changed before any join is sent", async () => {
  const mine = KdfParams.generate();
  const served = KdfParams.generate(); // a hostile server's salt
  const { ws, sig } = client((msg, sock) => {
    if (msg.type === "room-info") sock.reply({ type: "room-info", room: "r", exists: true, kdf: served.toJson(), lock: {} });
  });
  await assert.rejects(sig.join("r", "pw", { expectKdf: mine }),
    (err) => err instanceof ServerError && err.id === "kdf-changed");
  assert.deepEqual(ws.sent.map((m) => m.type), ["room-info"]);
  assert.equal(sig.kdf, null);
});

test("expectKdf: the same parameters join", async () => {
  const params = KdfParams.generate();
  const { ws, sig } = client((msg, sock) => {
    if (msg.type === "room-info") sock.reply({ type: "room-info", room: "r", exists: true, kdf: params.toJson(), lock: {} });
    if (msg.type === "join") { sock.challenge(); sock.reply({ ...JOINED, kdf: params.toJson() }); }
  });
  await sig.join("r", "pw", { expectKdf: KdfParams.fromJson(params.toJson()) });
  assert.ok(sig.kdf.equals(params));
  assert.equal(ws.sent.find((m) => m.type === "join").create, undefined);
});

test("a room gone (expired, server restarted) is made again with the expected salt", async () => {
  const remembered = KdfParams.generate();
  const { ws, sig } = client((msg, sock) => {
    if (msg.type === "room-info") sock.reply({ type: "room-info", room: "r", exists: false });
    if (msg.type === "join") { sock.challenge(); sock.reply({ ...JOINED, kdf: msg.create.kdf }); }
  });
  await sig.join("r", "pw", { expectKdf: remembered });
  assert.deepEqual(ws.sent.find((m) => m.type === "join").create.kdf, remembered.toJson());
  assert.ok(sig.kdf.equals(remembered));
});

test("a lost creation race (wrong-password after create) is retried once as a join", async () => {
  const theirs = KdfParams.generate();
  let infos = 0;
  const { ws, sig } = client((msg, sock) => {
    if (msg.type === "room-info") {
      infos++;
      if (infos === 1) sock.reply({ type: "room-info", room: "r", exists: false });
      else sock.reply({ type: "room-info", room: "r", exists: true, kdf: theirs.toJson(), lock: {} });
    }
    if (msg.type === "join") {
      sock.challenge();
      if (msg.create) sock.reply({ type: "error", id: "wrong-password", message: "wrong password for this room", ref: "join" });
      else sock.reply({ ...JOINED, kdf: theirs.toJson() });
    }
  });
  await sig.join("r", "pw");
  assert.deepEqual(ws.sent.map((m) => m.type), ["room-info", "join", "room-info", "join"]);
  assert.ok(sig.kdf.equals(theirs));
});

test("a plain wrong password is not retried", async () => {
  const params = KdfParams.generate();
  const { ws, sig } = client((msg, sock) => {
    if (msg.type === "room-info") sock.reply({ type: "room-info", room: "r", exists: true, kdf: params.toJson(), lock: {} });
    if (msg.type === "join") {
      sock.challenge();
      sock.reply({ type: "error", id: "wrong-password", message: "wrong password for this room", ref: "join" });
    }
  });
  await assert.rejects(sig.join("r", "pw"), (err) => err instanceof ServerError && err.id === "wrong-password");
  assert.deepEqual(ws.sent.map((m) => m.type), ["room-info", "join"]);
});
