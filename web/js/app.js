// The page: join a sealed room and hold an end-to-end-encrypted video call in it.
// Everything that talks to the network lives in call.js; this file renders.
//
// For tests and for people debugging in the console, `window.sealroom` exposes the
// current call and a summary of what the page shows (see `snapshot()` below).

import { detectApi } from "/e2ee-worker/attach.js";
import { Call } from "./call.js";
import { FileError } from "./files.js";
import { REACTION_SHOW_MS, REACTIONS } from "./hands.js";
import { ServerError } from "./signaling.js";
import { Tiles } from "./tiles.js";
import {
  canPickSpeaker, constraintsFor, deviceLabel, LevelMeter, listDevices, loadChoice, saveChoice,
} from "./devices.js";

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
  "cluster-unavailable": "The servers cannot reach each other just now. Try again in a few seconds.",
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

// --- devices: a preview before joining, a choice of camera, microphone and speaker -----

let preview = null; // {stream, meter} while the join page shows the camera and mic level
const choice = loadChoice();

function fillPicker(select, devices, name, chosen) {
  select.replaceChildren(...devices.map((d, i) => {
    const option = document.createElement("option");
    option.value = d.deviceId;
    option.textContent = deviceLabel(d, i, name);
    return option;
  }));
  if (chosen && devices.some((d) => d.deviceId === chosen)) select.value = chosen;
  select.disabled = devices.length < 2;
}

/** Fill every device menu (join page and call footer) with what the browser lists now. */
async function renderDevices(stream) {
  const devices = await listDevices().catch(() => ({ camera: [], microphone: [], speaker: [] }));
  const using = (kind) => stream?.getTracks().find((t) => t.kind === kind)?.getSettings?.().deviceId ?? null;
  const cam = using("video") ?? choice.camera;
  const mic = using("audio") ?? choice.microphone;
  for (const id of ["pick-camera", "cam-device"]) fillPicker($(id), devices.camera, "camera", cam);
  for (const id of ["pick-microphone", "mic-device"]) fillPicker($(id), devices.microphone, "microphone", mic);
  for (const id of ["pick-speaker", "spk-device"]) fillPicker($(id), devices.speaker, "speaker", choice.speaker);
  const speakers = canPickSpeaker() && devices.speaker.length > 0;
  $("pick-speaker-label").hidden = !speakers;
  $("spk-device").hidden = !speakers;
}

function stopPreview({ keepTracks = false } = {}) {
  if (!preview) return null;
  const { stream, meter } = preview;
  preview = null;
  meter?.close();
  $("preview").srcObject = null;
  if (!keepTracks) for (const t of stream.getTracks()) t.stop();
  return stream;
}

/** The join page's camera preview and microphone level, with the chosen devices. */
async function startPreview() {
  stopPreview();
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(constraintsFor(choice));
  } catch {
    try {
      stream = await navigator.mediaDevices.getUserMedia(constraintsFor({})); // a chosen device is gone
    } catch {
      $("preview-panel").hidden = true; // join says why (localMedia)
      return;
    }
  }
  if (call) { // joined meanwhile
    for (const t of stream.getTracks()) t.stop();
    return;
  }
  const mic = stream.getAudioTracks()[0];
  let meter = null;
  try {
    if (mic) meter = new LevelMeter(mic, (level) => { $("mic-level").value = level; });
  } catch {
    // no Web Audio: the preview goes on without the meter
  }
  preview = { stream, meter };
  $("preview").srcObject = stream;
  $("preview-panel").hidden = false;
  await renderDevices(stream);
}

/** Camera and microphone, or as much of them as the browser gives; never throws. */
async function localMedia() {
  // the preview's tracks become the call's (no second camera prompt, no gap)
  const shown = stopPreview({ keepTracks: true });
  if (shown && shown.getTracks().some((t) => t.readyState === "live")) return { stream: shown };
  try {
    return { stream: await navigator.mediaDevices.getUserMedia(constraintsFor(choice)) };
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

async function pickDevice(kind, deviceId) {
  if (kind === "speaker") {
    choice.speaker = deviceId;
    saveChoice(choice);
    tiles?.setSink(deviceId);
    return;
  }
  choice[kind] = deviceId;
  saveChoice(choice);
  if (!call) {
    await startPreview();
    return;
  }
  try {
    await call.setDevice(kind === "camera" ? "video" : "audio", deviceId);
  } catch (err) {
    banner(MEDIA_ERRORS[err.name] ?? `That ${kind} cannot be used (${err.name ?? err}).`);
  }
  renderControls();
  await renderDevices(call.stream);
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
  const sharing = Boolean(call?.screenTrack);
  $("screen").textContent = sharing ? "Stop sharing" : "Share screen";
  $("screen").setAttribute("aria-pressed", String(sharing));
  $("screen").disabled = !call?.media || !navigator.mediaDevices?.getDisplayMedia;
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
    else {
      tiles.remove(detail.id);
      tiles.removeScreen(detail.id);
    }
    $("count").textContent = `${tiles.size} in the call`;
  });
  c.addEventListener("name", ({ detail }) => tiles.setName(detail.id, detail.name));
  c.addEventListener("track", ({ detail }) => {
    if (detail.source === "screen") tiles.addScreen(detail.participant, detail.track);
    else tiles.addTrack(detail.participant, detail.track);
  });
  c.addEventListener("track-ended", ({ detail }) => {
    if (detail.source === "screen") tiles.removeScreen(detail.participant);
    else tiles.endTrack(detail.participant, detail.kind);
  });
  c.addEventListener("screen", ({ detail }) => {
    if (detail.active) tiles.addScreen("self", detail.track, c.name);
    else tiles.removeScreen("self");
    if (detail.reason) banner(screenError(detail.reason));
    renderControls();
  });
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
  wireSharing(c);
  try {
    await c.start();
    call = c;
    if (choice.speaker) tiles.setSink(choice.speaker);
    renderDevices(c.stream);
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
  clearTransfers();
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
for (const [id, kind] of [["pick-camera", "camera"], ["cam-device", "camera"],
  ["pick-microphone", "microphone"], ["mic-device", "microphone"],
  ["pick-speaker", "speaker"], ["spk-device", "speaker"]]) {
  $(id).addEventListener("change", () => pickDevice(kind, $(id).value));
}
if (api !== null && navigator.mediaDevices?.getUserMedia) startPreview();
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
/** What to tell a person whose screen share did not start (or was ended by the SFU). */
function screenError(reason) {
  if (/^screen-limit/.test(reason)) return "Someone else is sharing a screen: one screen share at a time in this room.";
  return `Screen sharing stopped: ${reason}`;
}

async function toggleScreen() {
  if (!call) return;
  try {
    if (call.screenTrack) await call.stopScreenShare();
    else await call.startScreenShare();
  } catch (err) {
    // the person closed the browser's picker: nothing to say
    if (err?.name !== "NotAllowedError" && err?.name !== "AbortError") banner(screenError(String(err?.message ?? err)));
  }
  renderControls();
}
$("screen").addEventListener("click", toggleScreen);
document.addEventListener("keydown", (ev) => {
  // D: share the screen or stop, as in Jitsi Meet; never while typing
  if (ev.key.toLowerCase() !== "d" || ev.ctrlKey || ev.metaKey || ev.altKey || !call) return;
  if (ev.target instanceof HTMLElement && ev.target.closest("input, textarea, select, [contenteditable]")) return;
  toggleScreen();
});
$("leave").addEventListener("click", leave);
$("rejoin").addEventListener("click", () => {
  show("join-view");
  if (lastJoin) join(lastJoin.room, lastJoin.password, lastJoin.name);
});
window.addEventListener("pagehide", () => call?.leave());

// --- hands, reactions, files (hands.js, files.js) -------------------------------------------

let handOrder = []; // ids with a raised hand, in raising order ("self": ours)
const transfers = new Map(); // transfer id → {view (no bytes), li, url}

const nameOf = (c, id) => (id === "self" || id === c.id ? "you" : c.names.get(id) ?? "someone");
const mb = (bytes) => `${(bytes / (1024 * 1024)).toFixed(1)} MB`;

function renderHands(c, list) {
  const before = new Set(handOrder);
  handOrder = list.map((h) => h.id);
  $("hands").replaceChildren(...list.map((h) => {
    const li = document.createElement("li");
    li.textContent = nameOf(c, h.id);
    return li;
  }));
  $("hands-bar").hidden = list.length === 0;
  list.forEach((h, i) => tiles?.setHand(h.id, i + 1));
  for (const id of before) if (!handOrder.includes(id)) tiles?.setHand(id, null);
  $("hand").textContent = c.handRaised ? "✋ Lower hand" : "✋ Raise hand";
  $("hand").setAttribute("aria-pressed", String(c.handRaised));
  $("hand").classList.toggle("attention", c.handRaised);
}

function renderRecipients(c) {
  const select = $("file-to");
  const chosen = select.value;
  const ids = [...(c.signaling?.members.keys() ?? [])];
  select.replaceChildren(new Option("everyone", "*"), ...ids.map((id) => new Option(nameOf(c, id), id)));
  select.value = ids.includes(chosen) ? chosen : "*";
}

function renderFile(c, view) {
  const { data, ...plain } = view;
  let t = transfers.get(view.id);
  if (!t) {
    const li = document.createElement("li");
    li.dataset.id = view.id;
    t = { view: plain, li, url: null };
    transfers.set(view.id, t);
    $("files").prepend(li);
    if (view.direction === "in" && $("files-panel").hidden) {
      $("files-panel").hidden = false; // an incoming file is never hidden behind a button
    }
  }
  t.view = plain;
  const who = view.direction === "in" ? `from ${nameOf(c, view.peer)}`
    : view.peer === "*" ? "to everyone" : `to ${nameOf(c, view.peer)}`;
  const title = document.createElement("b");
  title.textContent = `${view.name} (${mb(view.size)}) ${who}`;
  const bar = document.createElement("progress");
  bar.max = view.size;
  bar.value = view.bytes;
  const state = document.createElement("span");
  state.className = `state ${view.state}`;
  const pct = Math.floor((100 * view.bytes) / view.size);
  state.textContent = view.state === "active" ? `${view.direction === "in" ? "receiving" : "sending"}… ${pct}%`
    : view.state === "done" ? (view.direction === "in" ? "received, SHA-256 checked" : "sent")
      : view.message;
  const parts = [title, bar, state];
  if (view.state === "active") {
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "secondary cancel";
    cancel.textContent = "Cancel";
    cancel.addEventListener("click", () => call?.cancelFile(view.id));
    parts.push(cancel);
  }
  if (view.state === "done" && view.direction === "in" && data) {
    // Always a download (octet-stream): a received HTML or SVG file must not open in this
    // page's origin.
    t.url ??= URL.createObjectURL(new Blob([data], { type: "application/octet-stream" }));
    const a = document.createElement("a");
    a.href = t.url;
    a.download = view.name;
    a.className = "download";
    a.textContent = `Download ${view.name}`;
    parts.push(a);
  }
  t.li.replaceChildren(...parts);
}

function clearTransfers() {
  for (const t of transfers.values()) if (t.url) URL.revokeObjectURL(t.url);
  transfers.clear();
  $("files").replaceChildren();
  handOrder = [];
  $("hands-bar").hidden = true;
}

function wireSharing(c) {
  c.addEventListener("hands", ({ detail }) => renderHands(c, detail.list));
  c.addEventListener("reaction", ({ detail }) => tiles?.showReaction(detail.participant === c.id ? "self" : detail.participant, detail.emoji, REACTION_SHOW_MS));
  c.addEventListener("file", ({ detail }) => renderFile(c, detail));
  for (const type of ["member", "name"]) c.addEventListener(type, () => renderRecipients(c));
  c.addEventListener("name", () => renderHands(c, c.hands.list()));
}

async function toggleHand() {
  if (call) await call.raiseHand(!call.handRaised);
}

async function react(emoji) {
  await call?.react(emoji);
}

function pickFile() {
  if (!call) return;
  $("files-panel").hidden = false;
  $("file-input").click();
}

for (const [i, emoji] of REACTIONS.entries()) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = emoji;
  b.title = `React ${emoji} (${i + 1})`;
  b.dataset.emoji = emoji;
  b.addEventListener("click", () => react(emoji));
  $("reactions").append(b);
}
$("hand").addEventListener("click", toggleHand);
$("files-toggle").addEventListener("click", () => { $("files-panel").hidden = !$("files-panel").hidden; });
$("file-pick").addEventListener("click", pickFile);
$("file-input").addEventListener("change", async () => {
  const file = $("file-input").files?.[0];
  $("file-input").value = "";
  if (!file || !call) return;
  try {
    await call.sendFile($("file-to").value, file);
  } catch (err) {
    banner(err instanceof FileError ? `Not sent: ${err.message}.` : `Not sent: ${err?.message ?? err}`);
  }
});
document.addEventListener("keydown", (ev) => {
  // R: hand, F: send a file, 1–6: reactions (as Jitsi Meet's R); never while typing
  if (!call || ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat) return;
  if (ev.target instanceof HTMLElement && ev.target.closest("input, textarea, select, [contenteditable]")) return;
  const key = ev.key.toLowerCase();
  if (key === "r") toggleHand();
  else if (key === "f") pickFile();
  else if (/^[1-6]$/.test(key)) react(REACTIONS[Number(key) - 1]);
});

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
    hands: handOrder,
    handRaised: call?.handRaised ?? false,
    files: [...transfers.values()].map((t) => t.view),
  };
}

window.sealroom = {
  get call() { return call; },
  snapshot,
  leave,
  sample: (id, w, h) => tiles?.sample(id, w, h) ?? null,
};
