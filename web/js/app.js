// The page: join a sealed room, see who is there, chat inside sealed envelopes.
// (The video call is built on top of this in the browser-client issue.)

import { ServerError, SignalingClient } from "./signaling.js";

const $ = (id) => document.getElementById(id);
const MESSAGES = {
  "wrong-password": "Wrong password for this room.",
  "room-locked": "This room is locked. Ask someone inside to press “Allow joining”.",
  "too-many-attempts": "Too many failed attempts. Wait a minute, then try again.",
  "room-full": "This room is full.",
  "bad-room": "Room names use letters, digits and . _ ~ - (up to 64).",
};

let client = null;
const names = new Map(); // participant id → display name (from sealed hellos)

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function label(id) {
  return names.get(id) ?? id;
}

function renderMembers() {
  const list = $("members");
  list.replaceChildren();
  const me = document.createElement("li");
  me.textContent = `${names.get(client.id) ?? "you"} (you)`;
  list.append(me);
  for (const id of client.members.keys()) {
    const li = document.createElement("li");
    li.textContent = label(id);
    li.dataset.id = id;
    list.append(li);
  }
}

function addChat(who, text) {
  const li = document.createElement("li");
  const b = document.createElement("b");
  b.textContent = `${who}: `;
  li.append(b, document.createTextNode(text));
  $("chat").append(li);
  li.scrollIntoView({ block: "nearest" });
}

function renderLock(lock) {
  const el = $("lock-state");
  if (!lock) return;
  if (lock.locked) el.textContent = "The room is locked: newcomers need someone to allow joining.";
  else if (lock.open_until) el.textContent = `Joining allowed until ${new Date(lock.open_until * 1000).toLocaleTimeString()}.`;
  else if (lock.lock_at) el.textContent = `The room locks at ${new Date(lock.lock_at * 1000).toLocaleTimeString()}.`;
  else el.textContent = "";
}

async function join(room, password, name) {
  status("Deriving the room key…");
  $("join").disabled = true;
  try {
    const c = (client = await SignalingClient.connect("/ws"));
    client.addEventListener("sealed", ({ detail }) => {
      let msg;
      try { msg = detail.json(); } catch { return; }
      if (msg.type === "hello" && typeof msg.name === "string") {
        names.set(detail.sender, msg.name.slice(0, 40));
        renderMembers();
        if (msg.reply !== false) client.seal(detail.sender, { type: "hello", name, reply: false });
      } else if (msg.type === "chat" && typeof msg.text === "string") {
        addChat(label(detail.sender), msg.text);
      }
    });
    client.addEventListener("member-joined", renderMembers);
    client.addEventListener("member-left", ({ detail }) => { names.delete(detail.id); renderMembers(); });
    client.addEventListener("lock", ({ detail }) => renderLock(detail));
    client.addEventListener("close", ({ detail }) => {
      if (client === c) status(`Disconnected (${detail.reason || detail.code}).`, true);
    });
    const joined = await client.join(room, password);
    names.set(client.id, name || "you");
    history.replaceState(null, "", `/r/${encodeURIComponent(room)}`);
    $("join-view").hidden = true;
    $("room-view").hidden = false;
    $("room-title").textContent = room;
    renderMembers();
    renderLock(joined.lock);
    await client.seal("*", { type: "hello", name: name || "anonymous" });
  } catch (err) {
    const text = err instanceof ServerError ? (MESSAGES[err.id] ?? err.serverMessage) : String(err.message ?? err);
    const failed = client;
    client = null;
    failed?.close();
    status(text, true);
  } finally {
    $("join").disabled = false;
  }
}

$("join-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  join($("room").value.trim(), $("password").value, $("name").value.trim());
});
$("chat-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("chat-text").value;
  if (!text || !client) return;
  await client.seal("*", { type: "chat", text });
  addChat(names.get(client.id) ?? "you", text);
  $("chat-text").value = "";
});
$("allow").addEventListener("click", () => client?.allowJoining(120));
$("leave").addEventListener("click", () => {
  client?.leave();
  location.href = "/";
});

const fromPath = location.pathname.match(/^\/r\/([^/]+)$/);
if (fromPath) $("room").value = decodeURIComponent(fromPath[1]);
