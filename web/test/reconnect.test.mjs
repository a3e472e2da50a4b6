// node --test: web/js/reconnect.js, the page's rejoin schedule (docs/PROTOCOL.md
// "Reconnecting"). The storm it prevents: a browser whose media fails right after every
// join must not rejoin forever; only a session whose media connected starts the schedule over.
import assert from "node:assert/strict";
import { test } from "node:test";

import { MEDIA_ATTEMPTS, RECONNECT_DELAYS_MS, ReconnectPlan } from "../js/reconnect.js";

/** Every attempt the plan still allows, as [attempt, delayMs]. */
function drain(plan) {
  const out = [];
  for (let step = plan.next(); step !== null; step = plan.next()) out.push([step.attempt, step.delayMs]);
  return out;
}

test("the schedule: 0.5 s for 10 s, 1 s until 30 s, 5 s until about a minute; 46 attempts", () => {
  assert.equal(RECONNECT_DELAYS_MS.length, 46);
  const plan = new ReconnectPlan();
  plan.lost("connected");
  const steps = drain(plan);
  assert.deepEqual(steps.map(([a]) => a), [...Array(46).keys()].map((i) => i + 1));
  assert.equal(steps.slice(0, 20).reduce((t, [, d]) => t + d, 0), 10000);
  assert.equal(steps.slice(0, 40).reduce((t, [, d]) => t + d, 0), 30000);
  assert.equal(steps.at(-1)[1], 5000);
  assert.equal(plan.next(), null);
  assert.equal(plan.giveUp, null);
});

test("media that fails right after every join: the page gives up after MEDIA_ATTEMPTS sessions", () => {
  const plan = new ReconnectPlan();
  const attempts = [];
  let sessions = 0;
  // Each rejoin succeeds on signaling; its PeerConnection fails before it ever connects.
  for (let i = 0; i < 100 && plan.giveUp === null; i++) {
    plan.lost("unconnected");
    sessions += 1;
    if (plan.giveUp !== null) break;
    const step = plan.next();
    assert.notEqual(step, null);
    attempts.push(step.attempt);
  }
  assert.equal(plan.giveUp, "media-unreachable");
  assert.equal(sessions, MEDIA_ATTEMPTS);
  // The schedule went on across those sessions instead of starting over at each join.
  assert.deepEqual(attempts, [...Array(MEDIA_ATTEMPTS - 1).keys()].map((i) => i + 1));
});

test("a session whose media connected starts the schedule and the count over", () => {
  const plan = new ReconnectPlan();
  for (let i = 0; i < MEDIA_ATTEMPTS - 1; i++) {
    plan.lost("unconnected");
    plan.next();
  }
  assert.equal(plan.unconnected, MEDIA_ATTEMPTS - 1);
  plan.lost("connected"); // e.g. a server restart after a call that worked
  assert.equal(plan.unconnected, 0);
  assert.equal(plan.giveUp, null);
  assert.deepEqual(plan.next(), { attempt: 1, delayMs: RECONNECT_DELAYS_MS[0] });
});

test("a session with nothing to connect (no PeerConnection) restarts the schedule, keeps the count", () => {
  const plan = new ReconnectPlan();
  plan.lost("unconnected");
  plan.next();
  plan.next();
  plan.lost("none"); // alone, no camera: lost by its socket (a restart), not by its media
  assert.equal(plan.unconnected, 1);
  assert.deepEqual(plan.next(), { attempt: 1, delayMs: RECONNECT_DELAYS_MS[0] });
  // Server restarts, each survived by a session without media, never exhaust anything.
  for (let i = 0; i < 200; i++) {
    plan.lost("none");
    assert.notEqual(plan.next(), null);
  }
  assert.equal(plan.giveUp, null);
});

test("an outage longer than the schedule ends in null (the page shows 'lost')", () => {
  const plan = new ReconnectPlan();
  plan.lost("connected");
  assert.equal(drain(plan).length, RECONNECT_DELAYS_MS.length);
  assert.equal(plan.next(), null);
});
