// node --test: web/js/hands.js, raised hands and reactions (docs/PROTOCOL.md "Hands and
// reactions"): parsing, raising order, and the send and receive rate limits.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  Hands, RateLimit, RECEIVE_LIMITS, REACTIONS, SEND_LIMITS, SignalGate, SignalSender, parseSignal,
} from "../js/hands.js";

function clock(start = 1_000_000) {
  const c = { t: start, now: () => c.t };
  return c;
}

test("parseSignal keeps well-formed hands and known reactions, nothing else", () => {
  assert.deepEqual(parseSignal({ type: "hand", raised: true, at: 5 }), { kind: "hand", raised: true, at: 5 });
  assert.deepEqual(parseSignal({ type: "hand", raised: false }), { kind: "hand", raised: false, at: null });
  assert.deepEqual(parseSignal({ type: "hand", raised: true, at: "soon" }), { kind: "hand", raised: true, at: null });
  assert.equal(parseSignal({ type: "hand", raised: "yes" }), null);
  assert.equal(parseSignal({ type: "hand" }), null);
  assert.deepEqual(parseSignal({ type: "reaction", emoji: "👍" }), { kind: "reaction", emoji: "👍" });
  assert.equal(parseSignal({ type: "reaction", emoji: "<img src=x onerror=alert(1)>" }), null);
  assert.equal(parseSignal({ type: "reaction", emoji: 1 }), null);
  assert.equal(parseSignal(null), null);
  assert.equal(parseSignal({ type: "chat", text: "hi" }), null);
  assert.equal(REACTIONS.length, 6);
});

test("hands are listed in raising order; a repeat keeps its place; lowering removes", () => {
  const c = clock();
  const hands = new Hands(c.now);
  assert.equal(hands.set("pb", true), true);
  c.t += 10;
  assert.equal(hands.set("pa", true), true);
  c.t += 10;
  assert.equal(hands.set("pb", true, c.t), false); // the repeat sent to a newcomer
  assert.deepEqual(hands.list().map((h) => h.id), ["pb", "pa"]);
  assert.equal(hands.set("pb", false), true);
  assert.deepEqual(hands.list().map((h) => h.id), ["pa"]);
  assert.equal(hands.set("pb", false), false);
  assert.equal(hands.remove("pa"), true);
  assert.deepEqual(hands.list(), []);
});

test("a newcomer orders hands by the senders' raise times, never later than seen", () => {
  const c = clock();
  const hands = new Hands(c.now);
  hands.set("late", true, c.t - 1000); // heard of first, raised second
  hands.set("early", true, c.t - 5000);
  hands.set("future", true, c.t + 60_000); // a clock ahead: placed when seen, not later
  assert.deepEqual(hands.list().map((h) => h.id), ["early", "late", "future"]);
  assert.equal(hands.list()[2].since, c.t);
});

test("ties are broken by id, so every page shows the same order", () => {
  const c = clock();
  const hands = new Hands(c.now);
  hands.set("pz", true, 100);
  hands.set("pa", true, 100);
  assert.deepEqual(hands.list().map((h) => h.id), ["pa", "pz"]);
});

test("RateLimit: a burst, then the rate", () => {
  const c = clock();
  const limit = new RateLimit({ rate: 2, burst: 3 }, c.now);
  assert.deepEqual([limit.take(), limit.take(), limit.take(), limit.take()], [true, true, true, false]);
  c.t += 499;
  assert.equal(limit.take(), false);
  c.t += 1;
  assert.equal(limit.take(), true);
  c.t += 60_000; // refills to the burst, no more
  assert.equal([...Array(5)].filter(() => limit.take()).length, 3);
});

test("SignalSender seals hands and reactions to everyone, within its limits", async () => {
  const c = clock();
  const sent = [];
  const sender = new SignalSender(async (to, obj) => sent.push([to, obj]), c.now);
  assert.equal(await sender.setHand(true), true);
  assert.deepEqual(sent.at(-1), ["*", { type: "hand", raised: true, at: c.t }]);
  assert.equal(await sender.setHand(true), true); // already up: nothing sent
  assert.equal(sent.length, 1);
  assert.deepEqual(sender.handMessage(), { type: "hand", raised: true, at: c.t });
  await sender.setHand(false);
  assert.deepEqual(sent.at(-1), ["*", { type: "hand", raised: false }]);
  const results = [];
  for (let i = 0; i < SEND_LIMITS.reaction.burst + 3; i++) results.push(await sender.react("🎉"));
  assert.equal(results.filter(Boolean).length, SEND_LIMITS.reaction.burst);
  assert.equal(sender.dropped.reaction, 3);
  assert.deepEqual(sent.at(-1), ["*", { type: "reaction", emoji: "🎉" }]);
  await assert.rejects(sender.react("💩"), RangeError);
  // Hand toggling is limited too; the state does not change when the toggle is dropped.
  for (let i = 0; i < 10; i++) await sender.setHand(i % 2 === 0);
  assert.ok(sender.dropped.hand > 0);
  const lastSent = sent.filter(([, m]) => m.type === "hand").at(-1)[1];
  assert.equal(lastSent.raised, sender.handRaised);
});

test("SignalGate drops what one member sends beyond the receive limits, per member", () => {
  const c = clock();
  const gate = new SignalGate(c.now);
  const burst = RECEIVE_LIMITS.reaction.burst;
  const a = [...Array(burst + 5)].map(() => gate.accept("pa", "reaction"));
  assert.equal(a.filter(Boolean).length, burst);
  assert.equal(gate.dropped, 5);
  assert.equal(gate.accept("pb", "reaction"), true); // another member has its own bucket
  assert.equal(gate.accept("pa", "hand"), true); // and another kind
  c.t += 1000;
  assert.equal([...Array(5)].filter(() => gate.accept("pa", "reaction")).length, RECEIVE_LIMITS.reaction.rate);
  gate.forget("pa");
  assert.equal(gate.accept("pa", "reaction"), true);
  // What an honest sender sends at its limit is never dropped.
  assert.ok(RECEIVE_LIMITS.reaction.burst >= SEND_LIMITS.reaction.burst);
  assert.ok(RECEIVE_LIMITS.hand.burst >= SEND_LIMITS.hand.burst);
});
