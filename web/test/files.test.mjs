// node --test: web/js/files.js, files through sealed envelopes (docs/PROTOCOL.md "Files"):
// a transfer arrives byte-identical, a tampered or missing chunk is refused, a receiver that
// leaves or stalls ends the transfer with a reason, the window bounds what is in flight.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import {
  CHUNK_BYTES, FileError, FileTransfers, MAX_FILE_BYTES, REASONS, cleanName, parseOffer,
} from "../js/files.js";
import { b64 } from "../js/roomcrypto.js";

// No pacing; a stall long enough for a loaded machine (the stall test sets its own).
const FAST = { paceMs: 0, stallMs: 5000 };

/**
 * Members joined by an in-memory relay that delivers asynchronously, in order per sender
 * (as the server does), each message through `tap(from, to, msg)`: return the message
 * (changed or not) or null to drop it.
 */
function room(ids, { options = FAST, tap = (f, t, m) => m } = {}) {
  const peers = new Map();
  const log = [];
  let chain = Promise.resolve();
  for (const id of ids) {
    const seal = async (to, obj) => {
      const wire = JSON.stringify(obj);
      for (const dest of to === "*" ? ids.filter((x) => x !== id && peers.has(x)) : [to]) {
        chain = chain.then(async () => {
          await new Promise((r) => setImmediate(r));
          const msg = tap(id, dest, JSON.parse(wire));
          log.push({ from: id, to: dest, type: obj.type, index: obj.index, next: obj.next });
          if (msg !== null && peers.has(dest)) await peers.get(dest).onMessage(id, msg);
        });
      }
    };
    const ft = new FileTransfers({ seal, self: id, members: () => ids.filter((x) => x !== id && peers.has(x)), options });
    peers.set(id, ft);
  }
  return { peers, log, leave: (id) => { peers.get(id).close("left"); peers.delete(id); for (const p of peers.values()) p.memberLeft(id); } };
}

function bytes(n, seed = 7) {
  const out = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** Resolve with the view of transfer `id` on `ft` once it is no longer active (bounded). */
function ended(ft, pick, ms = 15000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no end within ${ms} ms: ${JSON.stringify(ft.list().map(({ data, ...v }) => v))}`)), ms);
    const check = () => {
      const v = ft.list().find(pick);
      if (v && v.state !== "active") {
        clearTimeout(timer);
        ft.removeEventListener("update", check);
        resolve(v);
      }
    };
    ft.addEventListener("update", check);
    check();
  });
}

test("a file to one member arrives byte-identical, its SHA-256 checked, progress on both sides", async () => {
  const { peers, log } = room(["pa", "pb"]);
  const data = bytes(5 * CHUNK_BYTES + 123);
  const progress = { pa: [], pb: [] };
  for (const id of ["pa", "pb"]) peers.get(id).addEventListener("update", ({ detail }) => progress[id].push(detail.bytes));
  const offered = await peers.get("pa").send("pb", { name: "../notes\u0000.txt", mime: "text/plain", data });
  assert.equal(offered.chunks, 6);
  assert.equal(offered.name, ".._notes_.txt"); // no path, no control characters
  const got = await ended(peers.get("pb"), (v) => v.direction === "in");
  const sent = await ended(peers.get("pa"), (v) => v.direction === "out");
  assert.equal(got.state, "done");
  assert.deepEqual(got.data, data);
  assert.equal(got.sha256, createHash("sha256").update(data).digest("hex"));
  assert.equal(got.mime, "text/plain");
  assert.equal(sent.state, "done");
  assert.equal(sent.bytes, data.length);
  assert.deepEqual(sent.receivers, { pb: { next: 6, state: "done", reason: null } });
  assert.ok(progress.pb.length >= 6 && progress.pb.at(-1) === data.length, progress.pb);
  assert.ok(progress.pa.some((b) => b > 0 && b < data.length), progress.pa);
  // Chunks went only to pb, acks only back to pa: every ackEvery chunks, then the final one.
  assert.deepEqual(log.filter((m) => m.type === "file-chunk").map((m) => m.index), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(log.filter((m) => m.type === "file-ack").map((m) => m.next), [0, 3, 6]);
});

test("to everyone: one sealed chunk to '*' each; a receiver that leaves does not stop the others", async () => {
  const { peers, log, leave } = room(["pa", "pb", "pc"], {
    tap: (from, to, msg) => {
      if (to === "pc" && msg.type === "file-chunk" && msg.index === 2) setImmediate(() => leave("pc"));
      return msg;
    },
  });
  const data = bytes(8 * CHUNK_BYTES);
  await peers.get("pa").send("*", { name: "deck.pdf", data });
  const got = await ended(peers.get("pb"), (v) => v.direction === "in");
  const sent = await ended(peers.get("pa"), (v) => v.direction === "out");
  assert.deepEqual(got.data, data);
  assert.equal(sent.state, "done");
  assert.equal(sent.receivers.pb.state, "done");
  assert.deepEqual(sent.receivers.pc, { next: 0, state: "failed", reason: "left" });
  // Each chunk was sealed once, to "*": the relay fanned it out.
  assert.equal(log.filter((m) => m.type === "file-chunk" && m.to === "pb").length, 8);
});

test("a chunk with altered content is refused by the final SHA-256 check, and the sender told", async () => {
  const { peers } = room(["pa", "pb"], {
    tap: (from, to, msg) => {
      if (msg.type === "file-chunk" && msg.index === 1) msg.data = b64(bytes(CHUNK_BYTES, 99)); // same length
      return msg;
    },
  });
  await peers.get("pa").send("pb", { name: "a.bin", data: bytes(3 * CHUNK_BYTES) });
  const got = await ended(peers.get("pb"), (v) => v.direction === "in");
  const sent = await ended(peers.get("pa"), (v) => v.direction === "out");
  assert.equal(got.state, "failed");
  assert.equal(got.reason, "hash-mismatch");
  assert.equal(got.data, null);
  assert.match(got.message, /SHA-256 does not match/);
  assert.equal(sent.state, "failed");
  assert.equal(sent.reason, "hash-mismatch");
});

test("a missing, repeated or wrong-length chunk is refused at once (bad-chunk)", async () => {
  for (const tamper of [
    (msg) => (msg.index === 1 ? null : msg), // dropped (e.g. an envelope that failed to open)
    (msg) => ({ ...msg, index: msg.index === 2 ? 1 : msg.index }), // a replayed index
    (msg) => (msg.index === 0 ? { ...msg, data: b64(bytes(10)) } : msg), // short
    (msg) => (msg.index === 0 ? { ...msg, data: "not base64!" } : msg),
  ]) {
    const { peers } = room(["pa", "pb"], { tap: (f, t, m) => (m.type === "file-chunk" ? tamper(m) : m) });
    await peers.get("pa").send("pb", { name: "a.bin", data: bytes(4 * CHUNK_BYTES) });
    const got = await ended(peers.get("pb"), (v) => v.direction === "in");
    const sent = await ended(peers.get("pa"), (v) => v.direction === "out");
    assert.equal(got.reason, "bad-chunk");
    assert.equal(sent.reason, "bad-chunk");
  }
});

test("chunks of a transfer not offered to us, or from another sender, are ignored", async () => {
  const { peers } = room(["pa", "pb", "pc"]);
  const pb = peers.get("pb");
  await pb.onMessage("pa", { type: "file-chunk", id: b64(bytes(16)), index: 0, data: b64(bytes(5)) });
  const offer = { type: "file-offer", id: b64(bytes(16)), name: "x", size: 10, chunk: CHUNK_BYTES, sha256: b64(bytes(32)) };
  await pb.onMessage("pa", offer);
  await pb.onMessage("pc", { type: "file-chunk", id: offer.id, index: 0, data: b64(bytes(10)) }); // pc is not the sender
  assert.equal(pb.ignored, 2);
  assert.equal(pb.list()[0].state, "active");
  assert.equal(await pb.onMessage("pa", { type: "chat", text: "hi" }), false);
});

test("the size cap: the sender refuses with a clear message; a receiver refuses a bigger offer", async () => {
  const { peers, log } = room(["pa", "pb"]);
  await assert.rejects(peers.get("pa").send("pb", { name: "big.iso", data: new Uint8Array(MAX_FILE_BYTES + 1) }),
    (err) => err instanceof FileError && err.id === "too-big" && /limited to 25 MB/.test(err.message));
  await assert.rejects(peers.get("pa").send("pb", { name: "empty", data: new Uint8Array(0) }), (err) => err.id === "empty");
  const pb = peers.get("pb");
  await pb.onMessage("pa", { type: "file-offer", id: b64(bytes(16)), name: "huge", size: MAX_FILE_BYTES + 1, chunk: CHUNK_BYTES, sha256: b64(bytes(32)) });
  const v = pb.list()[0];
  assert.equal(v.state, "failed");
  assert.equal(v.reason, "too-big");
  assert.match(v.message, /25 MB limit/);
  for (let i = 0; i < 200 && log.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(log.map((m) => m.type), ["file-cancel"]);
});

test("offers are checked field by field", () => {
  const good = { id: b64(bytes(16)), name: "a", size: 1, chunk: CHUNK_BYTES, sha256: b64(bytes(32)), mime: "image/png" };
  assert.equal(parseOffer(good).chunks, 1);
  assert.equal(parseOffer({ ...good, mime: "text/html; x" }).mime, "application/octet-stream");
  for (const bad of [{ id: "short" }, { size: 0 }, { size: 1.5 }, { chunk: 10 }, { chunk: CHUNK_BYTES + 1 },
    { sha256: b64(bytes(31)) }, { name: 5 }]) {
    assert.equal(parseOffer({ ...good, ...bad }), null, JSON.stringify(bad));
  }
  assert.equal(cleanName(""), "file");
  assert.equal(cleanName("x".repeat(500)).length, 200);
});

test("cancel: by the receiver stops the sender; by the sender ends the receiver's", async () => {
  let pbRef = null;
  const { peers } = room(["pa", "pb"], {
    tap: (from, to, msg) => {
      if (msg.type === "file-chunk" && msg.index === 1 && to === "pb") setImmediate(() => pbRef.cancel(msg.id));
      return msg;
    },
  });
  pbRef = peers.get("pb");
  await peers.get("pa").send("pb", { name: "a.bin", data: bytes(20 * CHUNK_BYTES) });
  const sent = await ended(peers.get("pa"), (v) => v.direction === "out");
  assert.equal(sent.state, "failed");
  assert.deepEqual(sent.receivers.pb.state, "cancelled");
  assert.equal((await ended(pbRef, (v) => v.direction === "in")).state, "cancelled");

  const two = room(["pa", "pb"], { options: { ...FAST, paceMs: 5 } });
  const v = await two.peers.get("pa").send("pb", { name: "b.bin", data: bytes(40 * CHUNK_BYTES) });
  setTimeout(() => two.peers.get("pa").cancel(v.id), 20);
  const got = await ended(two.peers.get("pb"), (x) => x.direction === "in");
  assert.equal(got.state, "cancelled");
  assert.equal(got.message, REASONS.cancelled);
});

test("a relay that stops delivering ends both sides with 'stalled', not a hang", async () => {
  let cut = false;
  const { peers } = room(["pa", "pb"], {
    options: { ...FAST, stallMs: 400 },
    tap: (from, to, msg) => {
      if (msg.type === "file-chunk" && msg.index === 4) cut = true;
      return cut ? null : msg;
    },
  });
  await peers.get("pa").send("pb", { name: "a.bin", data: bytes(20 * CHUNK_BYTES) });
  const got = await ended(peers.get("pb"), (v) => v.direction === "in");
  const sent = await ended(peers.get("pa"), (v) => v.direction === "out");
  assert.equal(got.reason, "stalled");
  assert.equal(sent.reason, "stalled");
  assert.match(got.message, /interrupted/);
});

test("the window: at most `window` chunks beyond the receiver's last ack are in flight", async () => {
  let maxAhead = 0;
  let acked = 0;
  const { peers } = room(["pa", "pb"], {
    options: { ...FAST, window: 4, ackEvery: 2 },
    tap: (from, to, msg) => {
      if (msg.type === "file-ack") acked = msg.next;
      if (msg.type === "file-chunk") maxAhead = Math.max(maxAhead, msg.index + 1 - acked);
      return msg;
    },
  });
  await peers.get("pa").send("pb", { name: "a.bin", data: bytes(30 * 1024 * 10) });
  assert.equal((await ended(peers.get("pb"), (v) => v.direction === "in")).state, "done");
  assert.ok(maxAhead <= 4 && maxAhead >= 2, maxAhead);
});

test("the session's end interrupts every transfer with a reason", async () => {
  const { peers } = room(["pa", "pb"], { options: { ...FAST, paceMs: 20 } });
  await peers.get("pa").send("pb", { name: "a.bin", data: bytes(20 * CHUNK_BYTES) });
  await new Promise((r) => setTimeout(r, 50));
  peers.get("pa").close();
  peers.get("pb").close();
  for (const id of ["pa", "pb"]) {
    const [v] = peers.get(id).list();
    assert.equal(v.state, "failed");
    assert.equal(v.reason, "disconnected");
  }
  await assert.rejects(peers.get("pa").send("pb", { name: "x", data: bytes(3) }), (e) => e.id === "disconnected");
});
