// node --test: web/js/devices.js, the device choice and the level meter's scale.
import assert from "node:assert/strict";
import { test } from "node:test";

import { constraintsFor, deviceLabel, listDevices, loadChoice, rmsLevel, saveChoice } from "../js/devices.js";

function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, String(v)) };
}

test("constraints ask for the chosen device exactly, or the default", () => {
  assert.deepEqual(constraintsFor({ camera: null, microphone: null }), { video: true, audio: true });
  assert.deepEqual(constraintsFor({ camera: "c1", microphone: "m2" }), {
    video: { deviceId: { exact: "c1" } }, audio: { deviceId: { exact: "m2" } },
  });
  assert.deepEqual(constraintsFor({ camera: "c1" }, { audio: false }), { video: { deviceId: { exact: "c1" } } });
  assert.deepEqual(constraintsFor(null), { video: true, audio: true });
});

test("the choice survives a reload, and junk in storage is ignored", () => {
  const storage = memoryStorage();
  assert.deepEqual(loadChoice(storage), { camera: null, microphone: null, speaker: null });
  saveChoice({ camera: "c1", microphone: "m1", speaker: "s1" }, storage);
  assert.deepEqual(loadChoice(storage), { camera: "c1", microphone: "m1", speaker: "s1" });
  storage.setItem("sealroom.devices", "{not json");
  assert.deepEqual(loadChoice(storage), { camera: null, microphone: null, speaker: null });
  storage.setItem("sealroom.devices", JSON.stringify({ camera: 5, microphone: "x".repeat(300) }));
  assert.deepEqual(loadChoice(storage), { camera: null, microphone: null, speaker: null });
});

test("devices are grouped by kind, labels fall back to a number", async () => {
  const fake = {
    enumerateDevices: async () => [
      { kind: "videoinput", deviceId: "c1", label: "Front" },
      { kind: "audioinput", deviceId: "m1", label: "" },
      { kind: "audiooutput", deviceId: "s1", label: "Speakers" },
      { kind: "videoinput", deviceId: "", label: "" }, // before permission: no id
    ],
  };
  const got = await listDevices(fake);
  assert.deepEqual(got.camera.map((d) => d.deviceId), ["c1"]);
  assert.deepEqual(got.microphone.map((d) => d.deviceId), ["m1"]);
  assert.deepEqual(got.speaker.map((d) => d.deviceId), ["s1"]);
  assert.equal(deviceLabel(got.camera[0], 0, "camera"), "Front");
  assert.equal(deviceLabel(got.microphone[0], 1, "microphone"), "Microphone 2");
});

test("the level is 0 for silence and -60 dBFS, 1 at full scale, monotonic between", () => {
  assert.equal(rmsLevel(new Float32Array(512)), 0);
  assert.equal(rmsLevel([]), 0);
  assert.ok(rmsLevel(new Float32Array(512).fill(0.001)) < 1e-6); // -60 dBFS
  assert.equal(rmsLevel(new Float32Array(512).fill(1)), 1);
  const quiet = rmsLevel(new Float32Array(512).fill(0.01));
  const loud = rmsLevel(new Float32Array(512).fill(0.3));
  assert.ok(quiet > 0 && quiet < loud && loud < 1, `${quiet} ${loud}`);
});
