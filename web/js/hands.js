// Raised hands and reactions: sealed application messages (docs/PROTOCOL.md "Hands and
// reactions"). No DOM here: call.js feeds it what arrives, app.js and tiles.js render it.
//
//   {"type":"hand","raised":true,"at":<the sender's clock when it raised, Unix ms>}
//   {"type":"reaction","emoji":"👍"}                       (one of REACTIONS)
//
// Both are rate-limited twice: the sender's page sends no more than SEND_LIMITS allow, and
// every receiver drops (and counts) what a member sends beyond RECEIVE_LIMITS, so a member
// whose client ignores the first limit cannot flood the others' screens. The server's
// per-socket and per-address message limits (PROTOCOL.md "Limits") count them as any
// sealed message.

/** The reactions a page shows; any other `emoji` is ignored by receivers. */
export const REACTIONS = Object.freeze(["👍", "👏", "😂", "😮", "❤️", "🎉"]);

/** How long a reaction stays over the sender's tile. */
export const REACTION_SHOW_MS = 4000;

/** Token buckets {rate per second, burst} for what this page sends. */
export const SEND_LIMITS = Object.freeze({
  hand: Object.freeze({ rate: 1, burst: 4 }),
  reaction: Object.freeze({ rate: 2, burst: 6 }),
});

/** What a receiver accepts from one member: the send limits and some slack for jitter. */
export const RECEIVE_LIMITS = Object.freeze({
  hand: Object.freeze({ rate: 1, burst: 6 }),
  reaction: Object.freeze({ rate: 2, burst: 8 }),
});

/** A token bucket (RFC 2697's single-rate idea, without colours): `take()` spends one token. */
export class RateLimit {
  constructor({ rate, burst }, now = Date.now) {
    this.rate = rate;
    this.burst = burst;
    this.now = now;
    this.tokens = burst;
    this.last = now();
  }

  take() {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.rate);
    this.last = t;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/**
 * A sealed hand or reaction message, checked: {kind: "hand", raised, at} or
 * {kind: "reaction", emoji}; null for anything else (receivers ignore it).
 */
export function parseSignal(msg) {
  if (msg?.type === "hand" && typeof msg.raised === "boolean") {
    const at = Number.isFinite(msg.at) ? msg.at : null;
    return { kind: "hand", raised: msg.raised, at };
  }
  if (msg?.type === "reaction" && typeof msg.emoji === "string" && REACTIONS.includes(msg.emoji)) {
    return { kind: "reaction", emoji: msg.emoji };
  }
  return null;
}

/**
 * Who has a hand up, in the order they raised it. The order key is when this page learnt
 * of the raise, or the sender's `at` when that is earlier (a newcomer hears of hands raised
 * before it joined, and must not put them after later ones): a sender's clock can only move
 * its hand back in the queue by claiming an earlier time than the truth, and no later than
 * when it was actually seen.
 */
export class Hands {
  constructor(now = Date.now) {
    this.now = now;
    this.raised = new Map(); // participant id → order key (Unix ms)
  }

  /** Apply a hand message of `id`; true when something changed. */
  set(id, raised, at = null) {
    if (!raised) return this.raised.delete(id);
    if (this.raised.has(id)) return false; // a repeat keeps its place
    const seen = this.now();
    this.raised.set(id, at !== null && at < seen ? at : seen);
    return true;
  }

  remove(id) {
    return this.raised.delete(id);
  }

  clear() {
    this.raised.clear();
  }

  has(id) {
    return this.raised.has(id);
  }

  /** [{id, since}] in raising order (ties: by id, so every page shows the same order). */
  list() {
    return [...this.raised.entries()]
      .map(([id, since]) => ({ id, since }))
      .sort((a, b) => a.since - b.since || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
}

/**
 * The sending side of one page: its own hand state and the send limits. `seal(to, obj)` is
 * SignalingClient.seal; returns whether the message went out (false: rate-limited or offline).
 */
export class SignalSender {
  constructor(seal, now = Date.now) {
    this.seal = seal;
    this.now = now;
    this.raisedAt = null; // Unix ms of our raise, or null
    this.limits = { hand: new RateLimit(SEND_LIMITS.hand, now), reaction: new RateLimit(SEND_LIMITS.reaction, now) };
    this.dropped = { hand: 0, reaction: 0 };
  }

  get handRaised() {
    return this.raisedAt !== null;
  }

  async setHand(raised) {
    if (raised === this.handRaised) return true;
    if (!this.limits.hand.take()) {
      this.dropped.hand += 1;
      return false;
    }
    this.raisedAt = raised ? this.now() : null;
    await this.seal("*", this.handMessage());
    return true;
  }

  /** Our hand as a message (sent again to a newcomer once its hello verified). */
  handMessage() {
    return this.raisedAt === null
      ? { type: "hand", raised: false }
      : { type: "hand", raised: true, at: this.raisedAt };
  }

  async react(emoji) {
    if (!REACTIONS.includes(emoji)) throw new RangeError(`not a reaction: ${emoji}`);
    if (!this.limits.reaction.take()) {
      this.dropped.reaction += 1;
      return false;
    }
    await this.seal("*", { type: "reaction", emoji });
    return true;
  }
}

/** The receiving side: one bucket per member and kind; `accept` false → drop (counted). */
export class SignalGate {
  constructor(now = Date.now) {
    this.now = now;
    this.buckets = new Map(); // `${kind} ${id}` → RateLimit
    this.dropped = 0;
  }

  accept(id, kind) {
    const key = `${kind} ${id}`;
    let bucket = this.buckets.get(key);
    if (!bucket) {
      bucket = new RateLimit(RECEIVE_LIMITS[kind], this.now);
      this.buckets.set(key, bucket);
    }
    if (bucket.take()) return true;
    this.dropped += 1;
    return false;
  }

  forget(id) {
    for (const kind of Object.keys(RECEIVE_LIMITS)) this.buckets.delete(`${kind} ${id}`);
  }
}
