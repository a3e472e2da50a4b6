// The page: join a sealed room and hold an end-to-end-encrypted video call in it.
// Everything that talks to the network lives in call.js; this file renders.
//
// For tests and for people debugging in the console, `window.sealroom` exposes the
// current call and a summary of what the page shows (see `snapshot()` below).

import { detectApi } from "/e2ee-worker/attach.js";
import { Call } from "./call.js";
import { ServerError } from "./signaling.js";
import { Tiles } from "./tiles.js";

const $ = (id) => document.getElementById(id);

/** What to tell a person for each server error id (docs/PROTOCOL.md has the full list). */
const MESSAGES = {
  "wrong-password": "Wrong password for this room.",
  "room-locked": "This room is locked: it stopped admitting newcomers. Anyone already inside can let you in by pressing “Allow joining”; then try again.",
  "too-many-attempts": "Too many failed attempts. Wait a minute, then try again.",
  "room-full": "This room is full.",
  "bad-room": "Room names use letters, digits and . _ ~ - (up to 64).",
  "too-many-rooms": "This address has created too many rooms. Join an existing one or wait.",
  "bad-resume": "The server did not take this browser back into the locked room. A member can press “Allow joining”; then join again.",
  timeout: "The server did not answer. Check your connection and try again.",
  closed: "The connection to the server closed. Try again.",
  "media-unreachable": "joined several times, but audio and video never got through to the server (a firewall may block UDP here; a TURN relay, if the server offers one, is tried automatically)",
};

const MEDIA_ERRORS = {
  NotAllowedError: "Camera and microphone are blocked for this site, so you joined without them. Allow them in the browser's site settings and join again to be seen and heard.",
  NotFoundError: "No camera or microphone was found, so you joined without them.",
  NotReadableError: "The camera or microphone is in use by another program, so you joined without them.",
};

let call = null;
let tiles = null;
let lastJoin = null; // {room, password, name}: for "Join again"
let secretFromLink = null;
let lastStream = null; // kept after leaving so one can check the tracks were stopped

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function banner(text, kind = "warn") {
  const el = $("banner");
  el.hidden = !text;
  el.textContent = text ?? "";
  el.className = kind;
}

function show(view) {
  for (const v of ["join-view", "room-view", "left-view"]) $(v).hidden = v !== view;
}

function errorText(err) {
  if (err instanceof ServerError) return MESSAGES[err.id] ?? err.serverMessage;
  return String(err?.message ?? err);
}

/** Camera and microphone, or as much of them as the browser gives; never throws. */
async function localMedia() {
  try {
    return { stream: await navigator.mediaDevices.getUserMedia({ audio: true, video: true }) };
  } catch (err) {
    // One of the two may still work (e.g. no camera): try each alone before giving up.
    for (const constraints of [{ audio: true }, { video: true }]) {
      try {
        const stream = await navigator.mediaDevices.getUserMedia(constraints);
        return { stream, warning: MEDIA_ERRORS[err.name] ?? `Camera or microphone unavailable (${err.name}).` };
      } catch {
        // try the next
      }
    }
    return { stream: null, warning: MEDIA_ERRORS[err.name] ?? `Camera and microphone unavailable (${err.name}).` };
  }
}

function renderLock(lock) {
  if (!lock) return;
  const now = Date.now() / 1000;
  const locked = lock.locked || (lock.lock_at && now >= lock.lock_at && !(lock.open_until && now < lock.open_until));
  let text = "";
  if (locked) text = "Locked: newcomers need someone to allow joining.";
  else if (lock.open_until) text = `Open to newcomers until ${new Date(lock.open_until * 1000).toLocaleTimeString()}.`;
  else if (lock.lock_at) text = `Locks to newcomers at ${new Date(lock.lock_at * 1000).toLocaleTimeString()}.`;
  $("lock-state").textContent = text;
  $("allow").classList.toggle("attention", Boolean(locked));
  // Clients compute the transition themselves (docs/PROTOCOL.md "Room lock").
  const next = [lock.lock_at, lock.open_until].filter((t) => t && t > now).sort()[0];
  clearTimeout(renderLock.timer);
  if (next) renderLock.timer = setTimeout(() => renderLock(lock), (next - now) * 1000 + 200);
}

function addChat(who, text, mine = false) {
  const li = document.createElement("li");
  if (mine) li.className = "mine";
  const b = document.createElement("b");
  b.textContent = `${who}: `;
  li.append(b, document.createTextNode(text));
  $("chat").append(li);
  li.scrollIntoView({ block: "nearest" });
  if ($("chat-panel").hidden && !mine) $("chat-toggle").classList.add("attention");
}

function renderControls() {
  const mic = call?.microphoneOn ?? false;
  const cam = call?.cameraOn ?? false;
  $("mic").textContent = mic ? "Mute" : "Unmute";
  $("mic").setAttribute("aria-pressed", String(mic));
  $("mic").classList.toggle("off", !mic);
  $("camera").textContent = cam ? "Stop camera" : "Start camera";
  $("camera").setAttribute("aria-pressed", String(cam));
  $("camera").classList.toggle("off", !cam);
  $("mic").disabled = !call?.stream?.getAudioTracks().length;
  $("camera").disabled = !call?.stream;
  tiles?.setLocal({ audio: mic, video: cam, stream: call?.stream ?? null });
}

function inviteLink(room) {
  const url = new URL(`/r/${encodeURIComponent(room)}`, location.origin);
  if (secretFromLink) url.hash = secretFromLink; // the fragment never reaches the server
  return url.href;
}

function wire(c) {
  c.addEventListener("member", ({ detail }) => {
    if (detail.joined) tiles.add(detail.id, detail.name);
    else tiles.remove(detail.id);
    $("count").textContent = `${tiles.size} in the call`;
  });
  c.addEventListener("name", ({ detail }) => tiles.setName(detail.id, detail.name));
  c.addEventListener("track", ({ detail }) => tiles.addTrack(detail.participant, detail.track));
  c.addEventListener("track-ended", ({ detail }) => tiles.endTrack(detail.participant, detail.kind));
  c.addEventListener("speaker", ({ detail }) => tiles.setSpeaker(detail.participant === c.id ? "self" : detail.participant));
  c.addEventListener("peer-state", ({ detail }) => tiles.setState(detail.participant, detail));
  c.addEventListener("stream-state", ({ detail }) => {
    if (detail.kind === "video") tiles.setPaused(detail.participant, detail.reason);
  });
  c.addEventListener("decrypt-failure", ({ detail }) => tiles.decryptFailure(detail.participant, detail.reasons));
  c.addEventListener("security-code", ({ detail }) => { $("security-code").textContent = detail.code; });
  c.addEventListener("lock", ({ detail }) => renderLock(detail));
  c.addEventListener("chat", ({ detail }) => addChat(c.names.get(detail.from) ?? "someone", detail.text));
  c.addEventListener("connection", ({ detail }) => {
    if (detail.state === "connected") banner(null);
    else if (detail.state === "reconnecting") banner(`Connection lost — reconnecting (attempt ${detail.attempt})…`);
    else banner(`Disconnected: ${MESSAGES[detail.reason] ?? detail.message ?? detail.reason}. Reload the page to try again.`, "error");
  });
}

async function join(room, password, name) {
  if (call) return;
  status("Starting camera and microphone…");
  $("join").disabled = true;
  const { stream, warning } = await localMedia();
  lastStream = stream;
  status("Deriving the room key…");
  // `?relay` forces all media through TURN (iceTransportPolicy "relay"): for checking a
  // TURN deployment (docs/DEPLOY.md), as Jitsi's and LiveKit's force-relay options do.
  const relayOnly = new URLSearchParams(location.search).has("relay");
  // ?simulcast=0 (or 1): publish one camera layer (or three) instead of the browser's default.
  const layers = new URLSearchParams(location.search).get("simulcast");
  const simulcast = layers === null ? null : layers !== "0";
  const c = new Call({ room, password, name: name || "anonymous", stream, relayOnly, simulcast });
  tiles = new Tiles($("grid"), { selfName: name || "you", onVideoSize: (id, h) => c.setVideoHeight(id, h) });
  wire(c);
  try {
    await c.start();
    call = c;
    lastJoin = { room, password, name };
    history.replaceState(null, "", `/r/${encodeURIComponent(room)}${location.search}${secretFromLink ? `#${secretFromLink}` : ""}`);
    show("room-view");
    $("room-title").textContent = room;
    $("count").textContent = `${tiles.size} in the call`;
    renderControls();
    status("");
    if (warning) banner(warning);
  } catch (err) {
    c.leave();
    tiles.clear();
    tiles = null;
    banner(null); // a "reconnecting" banner of the failed attempt is stale now
    status(errorText(err), true);
  } finally {
    $("join").disabled = false;
  }
}

function leave() {
  if (!call) return;
  call.leave();
  call = null;
  tiles?.clear();
  tiles = null;
  banner(null);
  show("left-view");
}

// --- join page ---------------------------------------------------------------------------

const api = detectApi();
if (api === null) {
  $("unsupported").hidden = false;
  $("join").disabled = true;
  $("create-link").disabled = true;
}
if (location.hash.length > 1) {
  secretFromLink = location.hash.slice(1);
  $("password").required = false;
  $("password-label").hidden = true;
  $("secret-note").hidden = false;
}
const fromPath = location.pathname.match(/^\/r\/([^/]+)$/);
if (fromPath) $("room").value = decodeURIComponent(fromPath[1]);
$("name").value = localStorage.getItem("sealroom.name") ?? "";

$("join-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("name").value.trim();
  localStorage.setItem("sealroom.name", name);
  join($("room").value.trim(), secretFromLink ?? $("password").value, name);
});

$("create-link").addEventListener("click", () => {
  // A fresh room name and a 256-bit secret that lives only in the link's #fragment.
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  secretFromLink = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const room = `room-${[...crypto.getRandomValues(new Uint8Array(5))].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
  $("room").value = room;
  $("password-label").hidden = true;
  $("password").required = false;
  $("secret-note").hidden = false;
  $("join-form").requestSubmit();
});

// --- room ----------------------------------------------------------------------------------

$("chat-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("chat-text").value;
  if (!text || !call) return;
  await call.chat(text);
  addChat(call.name, text, true);
  $("chat-text").value = "";
});
$("chat-toggle").addEventListener("click", () => {
  $("chat-panel").hidden = !$("chat-panel").hidden;
  $("chat-toggle").classList.remove("attention");
});
$("code-button").addEventListener("click", () => { $("code-panel").hidden = !$("code-panel").hidden; });
$("allow").addEventListener("click", () => call?.allowJoining(120));
$("invite").addEventListener("click", async () => {
  const link = inviteLink(call?.room ?? "");
  try {
    await navigator.clipboard.writeText(link);
    banner(secretFromLink ? "Invite link copied (it carries the room secret: share it privately)." : "Invite link copied. Share the password separately.", "info");
  } catch {
    banner(`Invite link: ${link}`, "info");
  }
});
$("mic").addEventListener("click", () => {
  call?.setMicrophone(!call.microphoneOn);
  renderControls();
});
$("camera").addEventListener("click", async () => {
  try {
    await call?.setCamera(!call.cameraOn);
  } catch (err) {
    banner(MEDIA_ERRORS[err.name] ?? `Camera unavailable (${err.name ?? err}).`);
  }
  renderControls();
});
$("leave").addEventListener("click", leave);
$("rejoin").addEventListener("click", () => {
  show("join-view");
  if (lastJoin) join(lastJoin.room, lastJoin.password, lastJoin.name);
});
window.addEventListener("pagehide", () => call?.leave());

/** What the page shows, for tests and debugging; no keys, no password. */
function snapshot() {
  return {
    api,
    joined: call !== null,
    id: call?.id ?? null,
    index: call?.signaling?.index ?? null,
    sendGeneration: call?.sendGeneration ?? null,
    reconnects: call?.reconnects ?? null,
    securityCode: $("security-code").textContent,
    banner: $("banner").hidden ? null : $("banner").textContent,
    tiles: tiles?.snapshot() ?? [],
    localTracks: (lastStream?.getTracks() ?? []).map((t) => ({ kind: t.kind, state: t.readyState, enabled: t.enabled })),
  };
}

window.sealroom = {
  get call() { return call; },
  snapshot,
  leave,
  sample: (id, w, h) => tiles?.sample(id, w, h) ?? null,
};
