// Which camera, microphone and speaker the page uses, and a microphone level meter.
//
//   const choice = loadChoice();                        // {camera, microphone, speaker} or nulls
//   const stream = await navigator.mediaDevices.getUserMedia(constraintsFor(choice));
//   const { camera, microphone, speaker } = await listDevices();
//   const meter = new LevelMeter(stream.getAudioTracks()[0], (level) => show(level));
//
// The choice is kept in localStorage (device ids only; browsers make them per-origin and
// reset them when the site's data is cleared). Nothing here touches the network.

const STORE = "sealroom.devices";
const KINDS = { camera: "videoinput", microphone: "audioinput", speaker: "audiooutput" };

/** The devices of each kind, as the browser lists them (labels once media is allowed). */
export async function listDevices(mediaDevices = navigator.mediaDevices) {
  const all = await mediaDevices.enumerateDevices();
  const out = {};
  for (const [name, kind] of Object.entries(KINDS)) {
    out[name] = all.filter((d) => d.kind === kind && d.deviceId);
  }
  return out;
}

/** A device's name for a menu: its label, or "Camera 2" before the browser tells labels. */
export function deviceLabel(device, index, name) {
  const label = (device.label ?? "").trim();
  if (label) return label;
  return `${name[0].toUpperCase()}${name.slice(1)} ${index + 1}`;
}

/**
 * getUserMedia constraints for `choice` ({camera, microphone}: device ids or null for the
 * browser's default). `exact`: a chosen device that is gone fails (OverconstrainedError)
 * rather than silently opening another one; the caller then falls back to the default.
 */
export function constraintsFor(choice, { video = true, audio = true } = {}) {
  const pick = (id) => (id ? { deviceId: { exact: id } } : true);
  const out = {};
  if (video) out.video = pick(choice?.camera ?? null);
  if (audio) out.audio = pick(choice?.microphone ?? null);
  return out;
}

export function loadChoice(storage = globalThis.localStorage) {
  try {
    const got = JSON.parse(storage?.getItem(STORE) ?? "null");
    const id = (v) => (typeof v === "string" && v.length <= 256 ? v : null);
    return { camera: id(got?.camera), microphone: id(got?.microphone), speaker: id(got?.speaker) };
  } catch {
    return { camera: null, microphone: null, speaker: null };
  }
}

export function saveChoice(choice, storage = globalThis.localStorage) {
  try {
    storage?.setItem(STORE, JSON.stringify({
      camera: choice.camera ?? null, microphone: choice.microphone ?? null, speaker: choice.speaker ?? null,
    }));
  } catch {
    // private mode or full storage: the choice lasts for this page only
  }
}

/** Whether this browser can send audio to a chosen speaker (HTMLMediaElement.setSinkId). */
export function canPickSpeaker() {
  return typeof HTMLMediaElement !== "undefined" && "setSinkId" in HTMLMediaElement.prototype;
}

/**
 * The level of one block of audio samples (floats in −1…1) on a 0…1 scale that moves the
 * way people hear loudness: RMS in dBFS, −60 dB (or silence) → 0, 0 dB → 1.
 */
export function rmsLevel(samples) {
  if (!samples || samples.length === 0) return 0;
  let sum = 0;
  for (const s of samples) sum += s * s;
  const rms = Math.sqrt(sum / samples.length);
  if (rms <= 0) return 0;
  const db = 20 * Math.log10(rms);
  return Math.min(1, Math.max(0, (db + 60) / 60));
}

/** A microphone level meter: `onLevel(0…1)` about ten times a second until close(). */
export class LevelMeter {
  constructor(track, onLevel, intervalMs = 100) {
    this.ctx = new AudioContext();
    const source = this.ctx.createMediaStreamSource(new MediaStream([track]));
    const analyser = this.ctx.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser); // not to the destination: the meter never plays the microphone
    const buf = new Float32Array(analyser.fftSize);
    this.level = 0;
    // Before any click or key the page may not run audio (autoplay policy): start then.
    if (this.ctx.state === "suspended" && typeof document !== "undefined") {
      const resume = () => this.ctx.resume().catch(() => {});
      for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, resume, { once: true });
    }
    this.timer = setInterval(() => {
      analyser.getFloatTimeDomainData(buf);
      this.level = rmsLevel(buf);
      onLevel(this.level);
    }, intervalMs);
  }

  close() {
    clearInterval(this.timer);
    this.ctx.close().catch(() => {});
  }
}
