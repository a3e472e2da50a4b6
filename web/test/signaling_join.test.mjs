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

test("resume: every join sends a fresh resume_pk in its transcript; a rejoin signs with the old key", async () => {
  const { verifyJoin, roomKeys, passwordKey } = await import("../js/roomcrypto.js");
  const params = KdfParams.generate();
  let nonce = null;
  const script = (msg, sock) => {
    if (msg.type === "room-info") sock.reply({ type: "room-info", room: "r", exists: true, kdf: params.toJson(), lock: {} });
    if (msg.type === "join") {
      sock.challenge();
      sock.reply({ ...JOINED, kdf: params.toJson(), resume: { cred: b64(new Uint8Array([1, 2, 3])), expires: 2e9 } });
    }
  };
  const first = client(script);
  nonce = first.sig.nonce;
  await first.sig.join("r", "pw");
  const join1 = first.ws.sent.find((m) => m.type === "join");
  const pk1 = unb64(join1.resume_pk);
  assert.equal(pk1.length, 32);
  assert.equal(join1.resume, undefined);
  const keys = await roomKeys(await passwordKey("pw", params), "r");
  const origin = first.sig.origin;
  assert.ok(await verifyJoin(keys.admPk, unb64(join1.sig), origin, "r", nonce, "c-1", pk1));
  assert.ok(!(await verifyJoin(keys.admPk, unb64(join1.sig), origin, "r", nonce, "c-1")));
  assert.deepEqual(Object.keys(first.sig.resume).sort(), ["cred", "expires", "room", "seed"]);
  // A refresh replaces the credential, same key.
  first.ws.reply({ type: "resume", cred: b64(new Uint8Array([9])), expires: 2e9 + 1 });
  assert.equal(first.sig.resume.cred, b64(new Uint8Array([9])));
  const resume = first.sig.resume;

  const second = client(script);
  const nonce2 = second.sig.nonce;
  await second.sig.join("r", "pw", { expectKdf: params, resume });
  const join2 = second.ws.sent.find((m) => m.type === "join");
  const pk2 = unb64(join2.resume_pk);
  assert.notDeepEqual(pk2, pk1); // a fresh key per membership
  assert.equal(join2.resume.cred, resume.cred);
  // The old membership's key signed this join's transcript (with the new resume_pk).
  assert.ok(await verifyJoin(pk1, unb64(join2.resume.sig), origin, "r", nonce2, "c-1", pk2));
  assert.ok(await verifyJoin(keys.admPk, unb64(join2.sig), origin, "r", nonce2, "c-1", pk2));
});

test("resume: resume-expired is retried once without the credential", async () => {
  const params = KdfParams.generate();
  let joins = 0;
  const { ws, sig } = client((msg, sock) => {
    if (msg.type === "room-info") sock.reply({ type: "room-info", room: "r", exists: true, kdf: params.toJson(), lock: {} });
    if (msg.type === "join") {
      joins += 1;
      sock.challenge();
      if (msg.resume) sock.reply({ type: "error", id: "resume-expired", message: "expired", ref: "join" });
      else sock.reply({ type: "error", id: "room-locked", message: "locked", ref: "join" });
    }
  });
  const stale = { room: "r", cred: b64(new Uint8Array([1])), expires: 1, seed: new Uint8Array(32) };
  await assert.rejects(sig.join("r", "pw", { resume: stale }), (err) => err.id === "room-locked");
  assert.equal(joins, 2);
  assert.ok(ws.sent.filter((m) => m.type === "join")[0].resume);
  assert.equal(ws.sent.filter((m) => m.type === "join")[1].resume, undefined);
});

test("going-away is an event with retry_after, and is recorded", () => {
  const { ws, sig } = client(() => {});
  const seen = [];
  sig.addEventListener("going-away", (e) => seen.push(e.detail));
  ws.reply({ type: "going-away", reason: "restart", retry_after: 1.5 });
  assert.deepEqual(seen.map((m) => [m.reason, m.retry_after]), [["restart", 1.5]]);
  assert.equal(sig.goingAway.retry_after, 1.5);
});

test("keyCache: a rejoin with the same room and parameters reuses the derived keys", async () => {
  const params = KdfParams.generate();
  const script = (msg, sock) => {
    if (msg.type === "room-info") sock.reply({ type: "room-info", room: "r", exists: true, kdf: params.toJson(), lock: {} });
    if (msg.type === "join") { sock.challenge(); sock.reply({ ...JOINED, kdf: params.toJson() }); }
  };
  const keyCache = {};
  await client(script).sig.join("r", "pw", { keyCache });
  const first = keyCache.keys;
  assert.ok(first && first.admPk.length === 32);
  const again = client(script);
  await again.sig.join("r", "pw", { expectKdf: params, keyCache });
  assert.equal(keyCache.keys, first); // the same object: nothing derived again
  const other = KdfParams.generate();
  const script2 = (msg, sock) => {
    if (msg.type === "room-info") sock.reply({ type: "room-info", room: "r", exists: true, kdf: other.toJson(), lock: {} });
    if (msg.type === "join") { sock.challenge(); sock.reply({ ...JOINED, kdf: other.toJson() }); }
  };
  await client(script2).sig.join("r", "pw", { keyCache });
  assert.notEqual(keyCache.keys, first); // other parameters: derived anew
});
