// When to rejoin after a lost session, and when to stop (docs/PROTOCOL.md "Reconnecting").
// Pure bookkeeping, no timers or network: call.js asks it, web/test/reconnect.test.mjs
// checks it.
//
//   const plan = new ReconnectPlan();
//   plan.lost(media);           // a session ended: 'connected', 'unconnected' or 'none'
//   plan.giveUp                 // null, or the reason to stop ('media-unreachable')
//   plan.next()                 // {attempt, delayMs} of the next rejoin, or null: exhausted
//
// The schedule restarts only after a session that was really up: its media connected, or it
// had no media to connect (no SFU, nothing published and nothing received yet). A session
// whose PeerConnection never reached 'connected' does not: its signaling join succeeded, but
// that says nothing about whether media can get through. Without this rule a browser whose
// media fails right after each join (UDP blocked, no usable ICE candidate) rejoined without
// end, every half second, each time a new session for everyone else in the room.

// The wait before each attempt (peers/client.py RECONNECT_DELAYS is the same): every 0.5 s
// for 10 s, every second until 30 s, then every 5 s until about a minute: a restarting server
// is found within 0.5–1 s of listening; 46 attempts, then 'lost'. An attempt while the server
// is down is one refused TCP connection.
export const RECONNECT_DELAYS_MS = [...Array(20).fill(500), ...Array(20).fill(1000), ...Array(6).fill(5000)];
// Sessions in a row whose media never connected before the page stops and says so.
export const MEDIA_ATTEMPTS = 5;

export class ReconnectPlan {
  #next = 0; // index in RECONNECT_DELAYS_MS of the next attempt
  #unconnected = 0; // sessions in a row whose media never connected

  /** Sessions in a row, up to now, whose media was tried and never connected. */
  get unconnected() {
    return this.#unconnected;
  }

  /** Why to stop rejoining, or null. */
  get giveUp() {
    return this.#unconnected >= MEDIA_ATTEMPTS ? "media-unreachable" : null;
  }

  /**
   * A session was lost. `media`: 'connected' (a PeerConnection of it reached 'connected'),
   * 'unconnected' (it had one, which never did), 'none' (it had none).
   */
  lost(media) {
    if (media === "unconnected") {
      this.#unconnected += 1; // and the schedule goes on where it was
    } else {
      if (media === "connected") this.#unconnected = 0;
      this.#next = 0; // a session that was up: a new outage, a fresh schedule
    }
  }

  /** The next attempt ({attempt: 1-based since the schedule started, delayMs}), or null. */
  next() {
    if (this.#next >= RECONNECT_DELAYS_MS.length) return null;
    const delayMs = RECONNECT_DELAYS_MS[this.#next];
    this.#next += 1;
    return { attempt: this.#next, delayMs };
  }
}
