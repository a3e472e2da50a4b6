// The receive and send rules of FORMAT.md §5–§7, checked on the worker's own state
// machines: rejections of every kind, nonce uniqueness, and a fuzz of decrypt.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  concat,
  CTR_LIMIT,
  decodeHeader,
  deriveKeySalt,
  encodeHeader,
  importKid,
  makeKid,
  GRACE_MS,
  makeNonce,
  parseFrame,
  REPLAY_WINDOW,
  ReceiveState,
  ReplayWindow,
  SendState,
} from '../worker.js';

const random = (n) => crypto.getRandomValues(new Uint8Array(n));
const vp8Key = (n = 200) => concat(Uint8Array.from([0x50, 0x43, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]), random(n - 10));
const vp8Delta = (n = 120) => concat(Uint8Array.from([0xd1, 0x02, 0x00]), random(n - 3));
const opus = (n = 60) => concat(Uint8Array.of(0x78), random(n - 1));

/** Not handed on: rejected, or held for a key that never comes (dropped after 1 s). */
const notPassed = (r) => Boolean(r.reject || r.hold);

/** A sender (index 3, participant 'alice') and a receiver holding its key. */
async function pair({ step = 0 } = {}) {
  const send = new SendState();
  let exported = await send.setKey(3, 0);
  for (let i = 0; i < step; i++) exported = await send.ratchet();
  const receive = new ReceiveState();
  await receive.setKey({ participant: 'alice', ...exported });
  return { send, receive, exported };
}

test('every single-byte change and every truncation is rejected', async () => {
  const { send, receive } = await pair();
  for (const [kind, frame] of [['video', vp8Key(60)], ['video', vp8Delta(40)], ['audio', opus(30)]]) {
    const out = await send.encrypt(kind, frame);
    for (let i = 0; i < out.length; i++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const bad = out.slice();
        bad[i] ^= mask;
        const r = await receive.decrypt(kind, 'alice', bad);
        // A change of the KID's sender bytes names a sender we have no key for:
        // such a frame is held (then dropped after 1 s), never passed.
        assert.ok(notPassed(r), `${kind} byte ${i} ^ ${mask}: ${JSON.stringify(r)}`);
      }
    }
    for (let n = 1; n < out.length; n++) {
      assert.ok(notPassed(await receive.decrypt(kind, 'alice', out.slice(0, n))), `prefix ${n}`);
      assert.ok(notPassed(await receive.decrypt(kind, 'alice', out.slice(n))), `suffix from ${n}`);
    }
    // Truncated to nothing it is an empty frame: it passes, and carries nothing.
    assert.equal((await receive.decrypt(kind, 'alice', out.slice(0, 0))).ok.length, 0);
    // The untouched frame still decrypts: the rejections did not change any state.
    const ok = await receive.decrypt(kind, 'alice', out);
    assert.deepEqual(ok.ok, frame);
  }
});

test('replay: the same CTR twice is rejected, reordering inside the window is not', async () => {
  const { send, receive } = await pair();
  const frames = [];
  for (let i = 0; i < 5; i++) frames.push(await send.encrypt('audio', opus()));
  assert.ok((await receive.decrypt('audio', 'alice', frames[3])).ok);
  assert.ok((await receive.decrypt('audio', 'alice', frames[1])).ok); // late, in window
  assert.deepEqual(await receive.decrypt('audio', 'alice', frames[3]), { reject: 'replay' });
  assert.deepEqual(await receive.decrypt('audio', 'alice', frames[1]), { reject: 'replay' });
  // The window is shared by the sender's tracks: its audio CTR cannot come back as video.
  assert.ok((await receive.decrypt('audio', 'alice', frames[4])).ok);
});

test('replay window: older than 1024 counters is rejected', () => {
  const w = new ReplayWindow();
  w.update(5000n);
  assert.equal(w.check(5000n - BigInt(REPLAY_WINDOW)), false);
  assert.equal(w.check(5000n - BigInt(REPLAY_WINDOW) + 1n), true);
  assert.equal(w.check(5000n), false);
  assert.equal(w.check(5001n), true);
  w.update(4990n);
  assert.equal(w.check(4990n), false);
  w.update(5000n + 2000n); // a jump clears the whole window
  assert.equal(w.check(6990n), true);
  assert.equal(w.check(4990n), false);
});

test('KID sender must be the track participant', async () => {
  const { send, receive } = await pair();
  const out = await send.encrypt('video', vp8Key());
  assert.deepEqual(await receive.decrypt('video', 'mallory', out), { reject: 'wrong-sender' });
  assert.ok((await receive.decrypt('video', 'alice', out)).ok);
});

test('step: any later step is followed, committed only after the tag verifies', async () => {
  const send = new SendState();
  const base = await send.setKey(3, 0);
  const receive = new ReceiveState();
  await receive.setKey({ participant: 'alice', ...base });
  const gen = () => receive.senders.get(3).generations.get(0);

  // 40 joins while this receiver saw no frame of alice (more than the old limit of 16).
  for (let i = 0; i < 40; i++) await send.ratchet();
  const ahead = await send.encrypt('video', vp8Delta());
  // A forged frame at that step (bad tag) does not move the receiver.
  const forged = ahead.slice();
  forged[5] ^= 1;
  assert.deepEqual(await receive.decrypt('video', 'alice', forged), { reject: 'auth-failed' });
  assert.equal(gen().step, 0);
  // The genuine one does.
  assert.ok((await receive.decrypt('video', 'alice', ahead)).ok);
  assert.equal(gen().step, 40);

  // The last step of the generation is still followed.
  while (send.current.step < 255) await send.ratchet();
  assert.ok((await receive.decrypt('video', 'alice', await send.encrypt('video', vp8Delta()))).ok);
  assert.equal(gen().step, 255);
});

test('step: forged KIDs cost at most one ratchet per step and generation', async () => {
  const send = new SendState();
  const base = await send.setKey(3, 0);
  const receive = new ReceiveState();
  await receive.setKey({ participant: 'alice', ...base });
  const gen = () => receive.senders.get(3).generations.get(0);
  const real = await send.encrypt('audio', opus());
  const forgeAt = async (step) => {
    const kid = makeKid(3, 0, step);
    const frame = real.slice(0, real.length - 1 - parseFrame('audio', real).header.length);
    const header = encodeHeader(kid, 999n);
    return concat(frame, header, Uint8Array.of(header.length));
  };
  // Forged frames naming steps 200, 100, 200 again: each fails its tag, none moves the
  // receiver, and the chain of base keys up to 200 is derived once (201 entries, no more).
  for (const step of [200, 100, 200, 150]) {
    assert.deepEqual(await receive.decrypt('audio', 'alice', await forgeAt(step)), { reject: 'auth-failed' });
  }
  assert.equal(gen().step, 0);
  assert.equal(gen().chain.size, 201);
  assert.equal(gen().ahead.size, 3);
  assert.ok((await receive.decrypt('audio', 'alice', real)).ok); // the real stream goes on
  // A genuine frame at step 1 commits it and frees what lies below.
  await send.ratchet();
  assert.ok((await receive.decrypt('audio', 'alice', await send.encrypt('audio', opus()))).ok);
  assert.equal(gen().step, 1);
  assert.equal(gen().chain.size, 200);
});

test('the previous step still decrypts (frames in flight), older steps do not', async () => {
  const { send, receive } = await pair();
  const step0 = await send.encrypt('audio', opus());
  const step0b = await send.encrypt('audio', opus());
  await send.ratchet();
  const step1 = await send.encrypt('audio', opus());
  await send.ratchet();
  const step2 = await send.encrypt('audio', opus());
  assert.ok((await receive.decrypt('audio', 'alice', step1)).ok);
  assert.ok((await receive.decrypt('audio', 'alice', step0)).ok);
  assert.ok((await receive.decrypt('audio', 'alice', step2)).ok);
  assert.deepEqual(await receive.decrypt('audio', 'alice', step0b), { reject: 'step-out-of-range' });
});

test('unknown sender or newer generation is held; older generation is stale', async () => {
  const { send, receive } = await pair();
  const other = new SendState();
  await other.setKey(9, 0);
  assert.deepEqual(await receive.decrypt('audio', 'alice', await other.encrypt('audio', opus())), {
    hold: true,
  });
  const g0 = await send.encrypt('audio', opus());
  const g1key = await send.rotate();
  send.switchToPending();
  const g1 = await send.encrypt('audio', opus());
  assert.deepEqual(await receive.decrypt('audio', 'alice', g1), { hold: true });
  await receive.setKey({ participant: 'alice', ...g1key });
  assert.ok((await receive.decrypt('audio', 'alice', g1)).ok);
  assert.ok((await receive.decrypt('audio', 'alice', g0)).ok); // previous generation kept
  // A third generation pushes the first out: only the two newest are kept.
  await receive.setKey({ participant: 'alice', ...(await send.rotate()) });
  assert.deepEqual([...receive.senders.get(3).generations.keys()].sort(), [1, 2]);
  const g0late = await send.encrypt('audio', opus()); // still generation 1: accepted
  assert.ok((await receive.decrypt('audio', 'alice', g0late)).ok);
  const stale = new SendState();
  await stale.setKey(3, 0);
  assert.deepEqual(await receive.decrypt('audio', 'alice', await stale.encrypt('audio', opus())), {
    reject: 'stale-key',
  });
});

test('cleartext frames are never passed on', async () => {
  const { receive } = await pair();
  for (let i = 0; i < 300; i++) {
    const [kind, frame] = [['video', vp8Key()], ['video', vp8Delta()], ['audio', opus()]][i % 3];
    const r = await receive.decrypt(kind, 'alice', frame);
    assert.ok(r.reject || r.hold, JSON.stringify(r));
  }
});

test('non-canonical header is rejected even with a valid tag', async () => {
  const { exported, receive } = await pair();
  const kid = makeKid(exported.sender, exported.generation, exported.step); // ≥ 8: extended form
  const ctr = 5n;
  // Canonical: b3 03 00 00 | ... CTR 5 in C bits. Non-canonical: CTR as one extra byte.
  const header = concat(Uint8Array.of(0xa8), Uint8Array.of(0x03, 0x00, 0x00), Uint8Array.of(0x05));
  assert.equal(decodeHeader(header), null);
  const { key, salt } = await deriveKeySalt(exported.key, kid);
  const aes = await crypto.subtle.importKey('raw', key, 'AES-GCM', false, ['encrypt']);
  const clear = Uint8Array.of(0x78);
  const ct = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: 'AES-GCM', iv: makeNonce(salt, ctr), additionalData: concat(header, Uint8Array.of(0x61), clear) },
      aes,
      random(20),
    ),
  );
  const frame = concat(clear, ct, header, Uint8Array.of(header.length));
  assert.deepEqual(await receive.decrypt('audio', 'alice', frame), { reject: 'bad-header' });
  // Header length byte outside 1..17.
  for (const len of [0, 18, 255]) {
    const bad = frame.slice();
    bad[bad.length - 1] = len;
    assert.deepEqual(await receive.decrypt('audio', 'alice', bad), { reject: 'bad-header' });
  }
});

test('empty frames pass both ways; no key means nothing is sent', async () => {
  const send = new SendState();
  assert.equal(await send.encrypt('video', vp8Key()), null);
  assert.equal(send.counter, 0n);
  const { receive } = await pair();
  assert.equal((await receive.decrypt('audio', 'alice', new Uint8Array(0))).ok.length, 0);
});

test('counter overflow: encryption is refused, never wraps', async () => {
  const { send } = await pair();
  send.counter = CTR_LIMIT - 1n;
  const last = await send.encrypt('audio', opus());
  assert.equal(parseFrame('audio', last).ctr, CTR_LIMIT - 1n);
  assert.equal(await send.encrypt('audio', opus()), null);
  assert.equal(await send.encrypt('video', vp8Key()), null);
  await send.ratchet();
  await send.rotate();
  send.switchToPending();
  assert.equal(await send.encrypt('audio', opus()), null); // no reset on ratchet/rotation
});

test('property: (key, nonce) never repeats across tracks, ratchets and rotations', async () => {
  // Seeded choice of operations, so a failure reproduces.
  let seed = 0x9e3779b9;
  const next = (n) => {
    seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return seed % n;
  };
  for (let run = 0; run < 5; run++) {
    const send = new SendState();
    await send.setKey(1 + run, 0);
    const seen = new Set();
    const derived = new Map();
    for (let op = 0; op < 400; op++) {
      const choice = next(20);
      if (choice === 0 && send.current.step < 255) await send.ratchet();
      else if (choice === 1 && send.pending === null) await send.rotate();
      else if (choice === 2) send.switchToPending();
      else {
        const [kind, frame] = [['video', vp8Delta(20)], ['audio', opus(10)], ['video', vp8Key(20)]][choice % 3];
        const out = await send.encrypt(kind, frame);
        const { kid, ctr } = parseFrame(kind, out);
        const cacheKey = `${kid}/${Buffer.from(send.current.base).toString('hex')}`;
        if (!derived.has(cacheKey)) derived.set(cacheKey, await deriveKeySalt(send.current.base, kid));
        const { key, salt } = derived.get(cacheKey);
        const pairId = `${Buffer.from(key).toString('hex')}/${Buffer.from(makeNonce(salt, ctr)).toString('hex')}`;
        assert.equal(seen.has(pairId), false, `repeat at op ${op}`);
        seen.add(pairId);
      }
    }
    assert.ok(seen.size > 300);
  }
});

test('fuzz: decrypt never throws and never accepts a forgery', async () => {
  const { send, receive } = await pair();
  const genuine = [];
  for (let i = 0; i < 20; i++) {
    const kind = i % 2 ? 'audio' : 'video';
    genuine.push([kind, await send.encrypt(kind, kind === 'audio' ? opus(40) : vp8Delta(40))]);
  }
  let accepted = 0;
  for (let i = 0; i < 3000; i++) {
    const [kind, base] = genuine[i % genuine.length];
    let input;
    if (i % 3 === 0) input = random(i % 90);
    else {
      input = base.slice();
      const edits = 1 + (i % 4);
      for (let e = 0; e < edits; e++) input[(i * 7 + e * 13) % input.length] ^= 1 + (i % 255);
      if (i % 5 === 0) input = input.slice(0, input.length - (i % 7));
      if (i % 7 === 0) input = concat(input, random(i % 5));
    }
    const r = await receive.decrypt(kind, 'alice', input); // must not throw
    assert.ok(r.ok || r.reject || r.hold);
    if (r.ok && r.ok.length > 0) accepted++;
  }
  assert.equal(accepted, 0);
  // Genuine frames are still accepted afterwards.
  for (const [kind, out] of genuine) assert.ok((await receive.decrypt(kind, 'alice', out)).ok);
});

test('the AES keys never leave: only the base key is exported', async () => {
  const keys = await importKid(random(32), 5n);
  assert.equal(keys.aead.extractable, false);
});

// ------------------------------------------------------------ key policy (FORMAT.md §6a)
// Each test plays a hostile server that makes the page ask for what it must not get.

test('key policy: a generation is installed once; an older one never; the page cannot reset it', async () => {
  const send = new SendState();
  const g0 = await send.setKey(3, 0);
  const receive = new ReceiveState();
  assert.equal(await receive.setKey({ participant: 'alice', ...g0 }), null);
  const recorded = await send.encrypt('video', vp8Key());
  assert.ok((await receive.decrypt('video', 'alice', recorded)).ok);
  // The same key again (a replayed media-key), or any key of generation 0: refused, and
  // the replay window is not reset, so the recorded frame stays a replay.
  assert.equal(await receive.setKey({ participant: 'alice', ...g0 }), 'old-key');
  assert.deepEqual(await receive.decrypt('video', 'alice', recorded), { reject: 'replay' });
  const g1 = await send.rotate();
  send.switchToPending();
  assert.equal(await receive.setKey({ participant: 'alice', ...g1 }), null);
  assert.equal(await receive.setKey({ participant: 'alice', ...g0, generation: 0 }), 'old-key');
  assert.equal(await receive.setKey({ participant: 'alice', ...g1 }), 'old-key');
});

test('key policy: fake leave and rejoin under the same id cannot bring an old key back', async () => {
  const send = new SendState();
  const g0 = await send.setKey(3, 0);
  const receive = new ReceiveState();
  await receive.setKey({ participant: 'alice', ...g0 });
  const recorded = [];
  for (let i = 0; i < 3; i++) recorded.push(await send.encrypt('audio', opus()));
  for (const f of recorded) assert.ok((await receive.decrypt('audio', 'alice', f)).ok);
  receive.removeParticipant('alice'); // the server says alice left...
  // ...and came back with the same id and index, and replays her recorded media-key.
  assert.equal(await receive.setKey({ participant: 'alice', ...g0 }), 'removed');
  // Even a key the real alice never made does not get in under that id.
  assert.equal(await receive.setKey({ participant: 'alice', ...g0, generation: 7 }), 'removed');
  for (const f of recorded) assert.deepEqual(await receive.decrypt('audio', 'alice', f), { hold: true });
});

test('key policy: one participant per sender index, one sender index per participant', async () => {
  const alice = new SendState();
  const a0 = await alice.setKey(3, 0);
  const receive = new ReceiveState();
  await receive.setKey({ participant: 'alice', ...a0 });
  const mallory = new SendState();
  const m0 = await mallory.setKey(3, 0); // a fake join reusing alice's index
  assert.equal(await receive.setKey({ participant: 'mallory', ...m0 }), 'sender-taken');
  assert.equal(await receive.setKey({ participant: 'alice', ...a0, sender: 4, generation: 1 }), 'wrong-sender');
  assert.ok((await receive.decrypt('audio', 'alice', await alice.encrypt('audio', opus()))).ok);
  // Once alice is gone her index is free, but frames under it never pass as alice's.
  receive.removeParticipant('alice');
  assert.equal(await receive.setKey({ participant: 'mallory', ...m0 }), null);
  const forged = await mallory.encrypt('video', vp8Key());
  assert.deepEqual(await receive.decrypt('video', 'alice', forged), { reject: 'wrong-sender' });
});

test('key policy: the previous generation is retired a grace period after the next one decrypts', async () => {
  const clock = { t: 0 };
  const send = new SendState();
  const g0 = await send.setKey(3, 0);
  const receive = new ReceiveState({ now: () => clock.t });
  await receive.setKey({ participant: 'alice', ...g0 });
  // The member who left holds generation 0 and keeps it: it forges with it later.
  const departed = new SendState();
  departed.current = send.current;
  departed.counter = 1000n;
  assert.ok((await receive.decrypt('audio', 'alice', await send.encrypt('audio', opus()))).ok);
  await receive.setKey({ participant: 'alice', ...(await send.rotate()) });
  send.switchToPending();
  // Before the first generation-1 frame, generation 0 is the working key: no limit yet.
  clock.t = 60_000;
  assert.ok((await receive.decrypt('audio', 'alice', await departed.encrypt('audio', opus()))).ok);
  assert.ok((await receive.decrypt('audio', 'alice', await send.encrypt('audio', opus()))).ok);
  // Frames in flight across the switch still decrypt during the grace...
  clock.t += GRACE_MS - 1;
  assert.ok((await receive.decrypt('audio', 'alice', await departed.encrypt('audio', opus()))).ok);
  // ...and nothing under generation 0 after it.
  clock.t += 1;
  assert.deepEqual(await receive.decrypt('audio', 'alice', await departed.encrypt('audio', opus())), { reject: 'stale-key' });
  assert.deepEqual([...receive.senders.get(3).generations.keys()], [1]);
  clock.t += 3600_000;
  assert.deepEqual(await receive.decrypt('audio', 'alice', await departed.encrypt('audio', opus())), { reject: 'stale-key' });
  assert.ok((await receive.decrypt('audio', 'alice', await send.encrypt('audio', opus()))).ok);
});

test('key policy: a track mapped to nobody drops every frame; rotation cannot overwrite a pending key', async () => {
  const { send, receive } = await pair();
  const out = await send.encrypt('video', vp8Key());
  for (const who of [null, undefined]) {
    assert.deepEqual(await receive.decrypt('video', who, out), { reject: 'unmapped' });
    assert.deepEqual(await receive.decrypt('video', who, new Uint8Array(0)), { reject: 'unmapped' });
  }
  const pending = await send.rotate();
  await assert.rejects(send.rotate(), /rotation is pending/);
  assert.equal(send.pending.generation, pending.generation);
  assert.deepEqual(Buffer.from(send.pending.base), Buffer.from(pending.key));
});
