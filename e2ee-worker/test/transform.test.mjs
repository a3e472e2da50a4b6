// The transform streams and the page protocol (FORMAT.md §8): frames flow through
// real WHATWG TransformStreams exactly as in the worker; only the encoded frames
// are plain objects ({data, getMetadata}) instead of RTCEncoded*Frame.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  concat,
  createWorkerState,
  FAILURE_REPORT_MS,
  HOLD_MS,
  makeReporter,
  parseFrame,
} from '../worker.js';

const random = (n) => crypto.getRandomValues(new Uint8Array(n));
const frameOf = (bytes, mimeType) => ({
  data: bytes.slice().buffer,
  getMetadata: () => (mimeType ? { mimeType } : {}),
});
const vp8 = (n = 100) => frameOf(concat(Uint8Array.of(0xd1, 0x02, 0x00), random(n - 3)), 'video/VP8');
const opus = (n = 40) => frameOf(concat(Uint8Array.of(0x78), random(n - 1)), 'audio/opus');

/** A worker state with a manual clock and a recorded outbox. */
function world() {
  const clock = { t: 0 };
  const posted = [];
  const state = createWorkerState({ post: (m) => posted.push(m), now: () => clock.t });
  return { clock, posted, state };
}

/** Attach a transform and return {push(frame), out: frames written}. */
function track(state, options) {
  const input = new TransformStream();
  const writer = input.writable.getWriter();
  const out = [];
  const writable = new WritableStream({ write: (f) => void out.push(f) });
  state.attach({ ...options, readable: input.readable, writable });
  return {
    out,
    async push(frame) {
      const before = state.stats.frames;
      await writer.write(frame);
      // Wait until the transform has finished this frame (bounded: 2 s).
      for (let i = 0; i < 2000 && state.stats.frames === before; i++) {
        await new Promise((r) => setTimeout(r, 1));
      }
      assert.equal(state.stats.frames, before + 1, 'the transform did not finish the frame');
    },
  };
}

async function linked() {
  const a = world();
  const b = world();
  const key = await a.state.handle({ type: 'setSendKey', sender: 4 });
  assert.equal(key.type, 'sendKey');
  assert.equal(key.key.length, 32);
  assert.deepEqual(a.posted.at(-1), { type: 'keySwitched', sender: 4, generation: 0, step: 0 });
  return { a, b, key };
}

test('encrypt → decrypt through the streams, both kinds, one counter for all tracks', async () => {
  const { a, b, key } = await linked();
  await b.state.handle({ ...key, type: 'setReceiveKey', participant: 'ann' });
  const video = track(a.state, { operation: 'encrypt', kind: 'video' });
  const audio = track(a.state, { operation: 'encrypt', kind: 'audio' });
  const rvideo = track(b.state, { operation: 'decrypt', kind: 'video', participant: 'ann' });
  const raudio = track(b.state, { operation: 'decrypt', kind: 'audio', participant: 'ann' });
  const sent = [];
  for (let i = 0; i < 6; i++) {
    const [t, f] = i % 2 ? [audio, opus()] : [video, vp8()];
    sent.push(new Uint8Array(f.data).slice());
    await t.push(f);
  }
  const ctrs = [...video.out.map((f) => parseFrame('video', new Uint8Array(f.data)).ctr),
    ...audio.out.map((f) => parseFrame('audio', new Uint8Array(f.data)).ctr)].sort();
  assert.deepEqual(ctrs, [0n, 1n, 2n, 3n, 4n, 5n]); // one counter across both tracks
  for (const f of video.out) await rvideo.push(f);
  for (const f of audio.out) await raudio.push(f);
  const got = [...rvideo.out, ...raudio.out].map((f) => Buffer.from(f.data).toString('hex'));
  assert.deepEqual(got.sort(), sent.map((s) => Buffer.from(s).toString('hex')).sort());
  const counters = await b.state.handle({ type: 'getCounters' });
  assert.equal(counters.decrypted, 6);
  assert.equal((await a.state.handle({ type: 'getCounters' })).counter, '6');
});

test('unknown KID: held up to 1 s and released in order when the key comes', async () => {
  const { a, b, key } = await linked();
  const send = track(a.state, { operation: 'encrypt', kind: 'video' });
  const recv = track(b.state, { operation: 'decrypt', kind: 'video', participant: 'ann' });
  const plain = [];
  for (let i = 0; i < 3; i++) {
    const f = vp8();
    plain.push(Buffer.from(f.data).toString('hex'));
    await send.push(f);
  }
  await recv.push(send.out[0]);
  b.clock.t += HOLD_MS / 2;
  await recv.push(send.out[1]);
  assert.equal(recv.out.length, 0); // nothing passes without a key
  await b.state.handle({ ...key, type: 'setReceiveKey', participant: 'ann' });
  b.clock.t += HOLD_MS / 2 - 1; // the first frame is now just under 1 s old
  await recv.push(send.out[2]);
  assert.deepEqual(recv.out.map((f) => Buffer.from(f.data).toString('hex')), plain);
});

test('unknown KID: dropped after 1 s, reported for the participant', async () => {
  const { a, b, key } = await linked();
  const send = track(a.state, { operation: 'encrypt', kind: 'audio' });
  const recv = track(b.state, { operation: 'decrypt', kind: 'audio', participant: 'ann' });
  for (let i = 0; i < 3; i++) await send.push(opus());
  await recv.push(send.out[0]);
  b.clock.t += HOLD_MS + 1;
  await b.state.handle({ ...key, type: 'setReceiveKey', participant: 'ann' });
  await recv.push(send.out[1]);
  assert.equal(recv.out.length, 1); // only the fresh frame
  assert.deepEqual(
    b.posted.find((m) => m.type === 'decryptFailure'),
    { type: 'decryptFailure', participant: 'ann', count: 1, reasons: { 'unknown-kid': 1 } },
  );
  const counters = await b.state.handle({ type: 'getCounters' });
  assert.equal(counters.dropped['unknown-kid'], 1);
});

test('wrong codec is dropped on both sides; empty frames pass', async () => {
  const { a, b, key } = await linked();
  await b.state.handle({ ...key, type: 'setReceiveKey', participant: 'ann' });
  const send = track(a.state, { operation: 'encrypt', kind: 'video' });
  await send.push(frameOf(random(50), 'video/H264'));
  assert.equal(send.out.length, 0);
  await send.push(frameOf(new Uint8Array(0), 'video/VP8'));
  assert.equal(send.out.length, 1);
  assert.equal(send.out[0].data.byteLength, 0);
  await send.push(vp8());
  const recv = track(b.state, { operation: 'decrypt', kind: 'video', participant: 'ann' });
  const good = send.out[1];
  await recv.push({ data: good.data.slice(0), getMetadata: () => ({ mimeType: 'video/VP9' }) });
  assert.equal(recv.out.length, 0);
  await recv.push(frameOf(new Uint8Array(0)));
  await recv.push(good);
  assert.equal(recv.out.length, 2);
  assert.equal((await b.state.handle({ type: 'getCounters' })).dropped['wrong-codec'], 1);
});

test('a transform never throws: broken frames are dropped, the stream goes on', async () => {
  const { a, b, key } = await linked();
  await b.state.handle({ ...key, type: 'setReceiveKey', participant: 'ann' });
  const send = track(a.state, { operation: 'encrypt', kind: 'audio' });
  const recv = track(b.state, { operation: 'decrypt', kind: 'audio', participant: 'ann' });
  await send.push({ get data() { throw new Error('boom'); } });
  await recv.push({ get data() { throw new Error('boom'); } });
  await recv.push(frameOf(random(30))); // clear/garbage
  assert.equal(send.out.length, 0);
  assert.equal(recv.out.length, 0);
  await send.push(opus());
  await recv.push(send.out[0]);
  assert.equal(recv.out.length, 1);
});

test('rotation: announced first, used after switchKey; ratchet is used at once', async () => {
  const { a, b, key } = await linked();
  await b.state.handle({ ...key, type: 'setReceiveKey', participant: 'ann' });
  const send = track(a.state, { operation: 'encrypt', kind: 'audio' });
  const recv = track(b.state, { operation: 'decrypt', kind: 'audio', participant: 'ann' });
  const next = await a.state.handle({ type: 'rotate' });
  assert.equal(next.generation, 1);
  assert.equal(next.pending, true);
  await send.push(opus());
  assert.equal(parseFrame('audio', new Uint8Array(send.out[0].data)).kid, (4n << 24n) | 0n);
  await b.state.handle({ ...next, type: 'setReceiveKey', participant: 'ann' });
  await a.state.handle({ type: 'switchKey' });
  assert.deepEqual(a.posted.at(-1), { type: 'keySwitched', sender: 4, generation: 1, step: 0 });
  await send.push(opus());
  assert.equal(parseFrame('audio', new Uint8Array(send.out[1].data)).kid, (4n << 24n) | (1n << 8n));
  const stepped = await a.state.handle({ type: 'ratchet' });
  assert.equal(stepped.step, 1);
  await send.push(opus());
  for (const f of send.out) await recv.push(f);
  assert.equal(recv.out.length, 3); // old generation, new generation, ratcheted step
  await b.state.handle({ type: 'removeParticipant', participant: 'ann' });
  await send.push(opus());
  await recv.push(send.out[3]);
  assert.equal(recv.out.length, 3);
});

test('failure reports are throttled per participant and carry its id', () => {
  let t = 0;
  const posted = [];
  const report = makeReporter((m) => posted.push(m), () => t);
  for (let i = 0; i < 50; i++) {
    report.failure('ann', 'auth-failed');
    report.failure('bob', 'replay');
    t += 10;
  }
  assert.deepEqual(posted.map((m) => m.participant), ['ann', 'bob']);
  t += FAILURE_REPORT_MS;
  report.failure('ann', 'auth-failed');
  assert.deepEqual(posted.at(-1), {
    type: 'decryptFailure',
    participant: 'ann',
    count: 50,
    reasons: { 'auth-failed': 50 },
  });
});

test('bad messages get an error reply, not an exception', async () => {
  const { state } = world();
  assert.equal((await state.handle({ type: 'nope' })).type, 'error');
  assert.equal((await state.handle(null)).type, 'error');
  await assert.rejects(state.handle({ type: 'setReceiveKey', participant: 'x', sender: 1, generation: 0, step: 0, key: new Uint8Array(5) }));
  await assert.rejects(state.handle({ type: 'ratchet' })); // no sending key yet
});

test('one injected frame with an unknown KID does not stall the track', async () => {
  const { a, b, key } = await linked();
  await b.state.handle({ ...key, type: 'setReceiveKey', participant: 'ann' });
  const send = track(a.state, { operation: 'encrypt', kind: 'video' });
  const recv = track(b.state, { operation: 'decrypt', kind: 'video', participant: 'ann' });
  const stranger = world(); // a KID nobody in the room has: the SFU's injection
  await stranger.state.handle({ type: 'setSendKey', sender: 99 });
  const inject = track(stranger.state, { operation: 'encrypt', kind: 'video' });
  await inject.push(vp8());
  for (let i = 0; i < 3; i++) await send.push(vp8());
  await recv.push(inject.out[0]);
  assert.equal(recv.out.length, 0); // held: its key might be on its way
  // The next genuine frame passes at once (no clock moved); the injected one is dropped.
  await recv.push(send.out[0]);
  assert.equal(recv.out.length, 1);
  assert.equal((await b.state.handle({ type: 'getCounters' })).dropped['unknown-kid'], 1);
  b.clock.t += HOLD_MS / 10;
  await recv.push(send.out[1]);
  await recv.push(send.out[2]);
  assert.equal(recv.out.length, 3);
});

test('held frames: those behind an expired one are still tried', async () => {
  const { a, b, key } = await linked();
  const send = track(a.state, { operation: 'encrypt', kind: 'audio' });
  const recv = track(b.state, { operation: 'decrypt', kind: 'audio', participant: 'ann' });
  for (let i = 0; i < 3; i++) await send.push(opus());
  await recv.push(send.out[0]); // no key yet: held
  b.clock.t += HOLD_MS - 10;
  await recv.push(send.out[1]); // held too
  await b.state.handle({ ...key, type: 'setReceiveKey', participant: 'ann' });
  b.clock.t += 20; // the first is now over 1 s old, the second is not
  await recv.push(send.out[2]);
  assert.equal(recv.out.length, 2); // the second and third, in order
  assert.equal((await b.state.handle({ type: 'getCounters' })).dropped['unknown-kid'], 1);
});

test('a receiver mapped to nobody drops everything; refused keys are told and counted', async () => {
  const { a, b, key } = await linked();
  await b.state.handle({ ...key, type: 'setReceiveKey', participant: 'ann' });
  const send = track(a.state, { operation: 'encrypt', kind: 'video' });
  const recv = track(b.state, { operation: 'decrypt', kind: 'video', participant: null });
  await send.push(vp8());
  await recv.push(send.out[0]);
  await recv.push(frameOf(new Uint8Array(0)));
  assert.equal(recv.out.length, 0);
  assert.equal((await b.state.handle({ type: 'getCounters' })).dropped.unmapped, 2);
  const again = await b.state.handle({ ...key, type: 'setReceiveKey', participant: 'ann' });
  assert.deepEqual(again, { type: 'receiveKeyRefused', participant: 'ann', sender: 4, generation: 0, reason: 'old-key' });
  assert.deepEqual((await b.state.handle({ type: 'getCounters' })).refused, { 'old-key': 1 });
});

test('a new session (a rejoin) starts the key records over; the sending side is kept', async () => {
  const { a, b, key } = await linked();
  await b.state.handle({ ...key, type: 'setReceiveKey', participant: 'ann' });
  await b.state.handle({ type: 'removeParticipant', participant: 'ann' });
  assert.equal((await b.state.handle({ ...key, type: 'setReceiveKey', participant: 'ann' })).reason, 'removed');
  const own = await b.state.handle({ type: 'setSendKey', sender: 9 });
  await b.state.handle({ type: 'newSession' });
  assert.equal((await b.state.handle({ ...key, type: 'setReceiveKey', participant: 'ann' })).type, 'receiveKeySet');
  assert.equal(b.state.send.current.sender, own.sender);
});

test('worker.js stays one dependency-free file of at most 600 non-blank lines', async () => {
  const { readFileSync } = await import('node:fs');
  const source = readFileSync(new URL('../worker.js', import.meta.url), 'utf8');
  assert.ok(source.split('\n').filter((line) => line.trim() !== '').length <= 600);
  assert.doesNotMatch(source, /^\s*import\b|\bimport\(|[^#]\brequire\(/m);
});
