// The OBS overlay: shows who is being read and the text while it is spoken, and plays the
// audio itself (streamed from the daemon's browser sink) so OBS can capture it.
// URL parameters: key (read-only credential), audio=0 (text only), sink=NAME, linger=SECONDS.
"use strict";

const params = new URLSearchParams(location.search);
const wantAudio = params.get("audio") !== "0";
const linger = Number(params.get("linger") || 1.5);
const bubble = document.getElementById("bubble");
const stats = { frames: 0, bytes: 0, samples: 0, started: 0, cut: 0, lastText: "", state: "idle" };
window.overlayStats = stats; // for tests and curious streamers (open the browser console)

let ctx = null;
let nextTime = 0;
let audioEnd = 0; // AudioContext time when the scheduled audio ends
const sources = new Map(); // utterance id -> playing/scheduled AudioBufferSourceNodes
let shownId = null;
let hideTimer = null;

function audio() {
  if (!ctx) {
    ctx = new AudioContext();
    const hint = document.getElementById("sound-hint");
    const check = () => { hint.hidden = ctx.state !== "suspended"; };
    ctx.onstatechange = check;
    check();
    hint.onclick = () => ctx.resume();
  }
  return ctx;
}

function show(ev) {
  clearTimeout(hideTimer);
  shownId = ev.id;
  document.getElementById("who").textContent = ev.user || "";
  document.getElementById("text").textContent = ev.text || "";
  stats.lastText = ev.text || "";
  bubble.classList.remove("hidden");
  document.body.dataset.state = stats.state = "speaking";
}

function hide(id, now) {
  if (id !== undefined && id !== shownId) return;
  clearTimeout(hideTimer);
  const left = now ? 0 : Math.max(0, ctx ? audioEnd - ctx.currentTime : 0) + linger;
  hideTimer = setTimeout(() => {
    bubble.classList.add("hidden");
    document.body.dataset.state = stats.state = "idle";
  }, left * 1000);
}

function cut(id) {
  stats.cut += 1;
  for (const src of sources.get(id) || []) { try { src.stop(); } catch (e) { /* already ended */ } }
  sources.delete(id);
  if (ctx) { nextTime = ctx.currentTime; audioEnd = ctx.currentTime; }
  hide(id, true);
}

function playFrame(buf) {
  const view = new DataView(buf);
  const id = view.getUint32(0, true);
  const rate = view.getUint32(4, true);
  const pcm = new Int16Array(buf, 8, (buf.byteLength - 8) >> 1);
  stats.frames += 1;
  stats.bytes += buf.byteLength;
  stats.samples += pcm.length;
  if (!pcm.length) return;
  const ac = audio();
  const data = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
  const ab = ac.createBuffer(1, data.length, rate);
  ab.copyToChannel(data, 0);
  const src = ac.createBufferSource();
  src.buffer = ab;
  src.connect(ac.destination);
  const at = Math.max(nextTime, ac.currentTime + 0.05);
  src.start(at);
  nextTime = at + ab.duration;
  audioEnd = nextTime;
  if (!sources.has(id)) sources.set(id, []);
  sources.get(id).push(src);
  src.onended = () => {
    const list = sources.get(id);
    if (list) { const i = list.indexOf(src); if (i >= 0) list.splice(i, 1); }
  };
}

function onControl(ev) {
  switch (ev.type || ev.event) {
    case "hello": if (ev.speaking) show(ev.speaking); break;
    case "speaking": show(ev); break;
    case "spoken": case "failed": hide(ev.id, false); break;
    case "cut": cut(ev.id); break; // from the bus (event) or the sink (frame): either is at once
    case "start": stats.started += 1; break;
    case "pause": case "paused": if (ctx) ctx.suspend(); break;
    case "resume": case "resumed": if (ctx) ctx.resume(); break;
  }
}

function connect(delay = 500) {
  const q = new URLSearchParams();
  for (const k of ["key", "audio", "sink"]) if (params.get(k)) q.set(k, params.get(k));
  if (!wantAudio) q.set("audio", "0");
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/overlay/ws?" + q);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { delay = 500; };
  ws.onmessage = (m) => {
    if (typeof m.data === "string") onControl(JSON.parse(m.data));
    else if (wantAudio) playFrame(m.data);
  };
  ws.onclose = () => setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
}

connect();
