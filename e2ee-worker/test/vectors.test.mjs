// Known-answer tests: RFC 9605 Appendix C (suite 0x0004 and every header case),
// the format check value (FORMAT.md §10), the ratchet chain, and the generated frame cases —
// all produced by the Python reference (tests/vectors/make_sframe_vectors.py).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  decodeHeader,
  deriveKeySalt,
  encodeHeader,
  encryptFrame,
  importKid,
  makeKid,
  makeNonce,
  open,
  ratchetKey,
  ReceiveState,
  seal,
  splitKid,
} from '../worker.js';

const vectors = new URL('../../tests/vectors/', import.meta.url);
const rfc = JSON.parse(readFileSync(new URL('sframe_rfc9605.json', vectors)));
const ours = JSON.parse(readFileSync(new URL('sframe.json', vectors)));

const hex = (s) => Uint8Array.from(Buffer.from(s, 'hex'));
const toHex = (b) => Buffer.from(b).toString('hex');

test('RFC 9605 C.1: every header case encodes and decodes', () => {
  assert.equal(rfc.header.length, 289);
  for (const { kid, ctr, encoded } of rfc.header) {
    assert.equal(toHex(encodeHeader(BigInt(kid), BigInt(ctr))), encoded, `${kid} ${ctr}`);
    assert.deepEqual(decodeHeader(hex(encoded)), { kid: BigInt(kid), ctr: BigInt(ctr) });
  }
});

test('RFC 9605 C.3, suite 0x0004: key, salt, nonce, ciphertext', async () => {
  const [v] = rfc.sframe;
  assert.equal(v.cipher_suite, 4);
  const kid = BigInt(v.kid);
  const ctr = BigInt(v.ctr);
  const { key, salt } = await deriveKeySalt(hex(v.base_key), kid);
  assert.equal(toHex(key), v.sframe_key);
  assert.equal(toHex(salt), v.sframe_salt);
  assert.equal(toHex(makeNonce(salt, ctr)), v.nonce);
  const keys = await importKid(hex(v.base_key), kid);
  const { header, ciphertext } = await seal(keys, ctr, hex(v.metadata), hex(v.pt));
  assert.equal(toHex(header) + toHex(ciphertext), v.ct);
  assert.equal(toHex(header) + v.metadata, v.aad);
  const pt = await open(keys, header, ctr, hex(v.metadata), ciphertext);
  assert.equal(toHex(pt), v.pt);
  // The RFC's metadata is authenticated: a changed byte fails the tag.
  const other = hex(v.metadata);
  other[0] ^= 1;
  assert.equal(await open(keys, header, ctr, other, ciphertext), null);
});

test('the format check value (FORMAT.md §10)', async () => {
  const base = Uint8Array.from({ length: 32 }, (_, i) => i);
  const frame = Uint8Array.from([...hex('5043009d012a8002e001'), ...new Array(20).fill(0x11)]);
  const keys = await importKid(base, makeKid(7, 1, 0));
  const out = await encryptFrame(keys, 1n, 'video', frame);
  assert.equal(
    toHex(out),
    '5043009d012a8002e001' +
      '05a936506f635732f35c1452cffbed91c3991a2c4e82ec2ceb7ed465c29acd728268a487' +
      'b107000100' +
      '05',
  );
  assert.equal(
    toHex(await ratchetKey(base)),
    '1e31370b2f041d5c893dbba4b27bc3e67956a51ae6221a427445cab04059fd65',
  );
});

test('ratchet chain and per-step keys match the reference', async () => {
  assert.equal(ours.ratchet.length, 21);
  let base = hex(ours.ratchet[0].base_key);
  for (const { step, base_key, key, salt } of ours.ratchet) {
    assert.equal(toHex(base), base_key, `step ${step}`);
    const derived = await deriveKeySalt(base, makeKid(7, 1, step));
    assert.equal(toHex(derived.key), key);
    assert.equal(toHex(derived.salt), salt);
    base = await ratchetKey(base);
  }
});

test('generated frames: JS encrypts byte for byte like Python', async () => {
  assert.ok(ours.frames.length >= 10);
  for (const v of ours.frames) {
    const kid = makeKid(v.sender, v.generation, v.step);
    assert.equal(kid, BigInt(v.kid));
    assert.deepEqual(splitKid(kid), { sender: v.sender, generation: v.generation, step: v.step });
    const { key, salt } = await deriveKeySalt(hex(v.base_key), kid);
    assert.equal(toHex(key), v.key, v.name);
    assert.equal(toHex(salt), v.salt, v.name);
    assert.equal(toHex(makeNonce(salt, BigInt(v.ctr))), v.nonce, v.name);
    assert.equal(toHex(encodeHeader(kid, BigInt(v.ctr))), v.header, v.name);
    const keys = await importKid(hex(v.base_key), kid);
    const out = await encryptFrame(keys, BigInt(v.ctr), v.kind, hex(v.frame));
    assert.equal(toHex(out), v.out, v.name);
  }
});

test('generated frames: JS decrypts what Python encrypted', async () => {
  for (const v of ours.frames) {
    const receive = new ReceiveState();
    // The ratcheted case installs step 0 of its chain: the receiver must follow
    // the ratchet itself (≤ 16 steps ahead).
    await receive.setKey({
      participant: 'p',
      sender: v.sender,
      generation: v.generation,
      step: v.receiver_step,
      key: hex(v.receiver_key),
    });
    const result = await receive.decrypt(v.kind, 'p', hex(v.out));
    assert.ok(result.ok, `${v.name}: ${JSON.stringify(result)}`);
    assert.equal(toHex(result.ok), v.frame, v.name);
  }
});
