// The control room: plain JavaScript over /api/<verb> and the /api/events WebSocket.
// Everything from chat is put on the page as text (textContent), never as HTML.
"use strict";

const T = {
  zh: {
    title: "控制室", engine: "引擎", logout: "退出", say: "说一句", say_ph: "要说的话", voice: "声音", priority: "优先级",
    speak: "说", queue: "队列", skip: "跳过", pause: "暂停", resume: "继续", clear: "清空", feed: "实时", history: "历史",
    voices: "声音", upload: "上传参考录音", voice_id: "声音 id（新的或已有的）", transcript: "录音里说的话（逐字）",
    upload_go: "上传", sources: "来源", room_or_channel: "B站房间号或地址 / Twitch 频道", add: "添加", sinks: "输出",
    overlay: "叠加层 (OBS)", overlay_show: "显示叠加层地址", default_voice: "默认", speaking: "正在说", prepared: "已合成",
    waiting: "等待", remove: "移除", play: "播放", download: "下载", preview: "试听", restore: "恢复配置",
    stop: "停止", start: "启动", uploaded: "已上传", loading: "加载中", running: "运行中", stopping: "停止中",
    received: "收到", filtered: "未读", spoken: "已说", cut: "被打断", dropped: "丢弃", failed: "失败", expired: "过期",
    paused_state: "已暂停", queued: "已排队", done: "完成", nothing: "（空）", copied: "已复制叠加层地址",
    speed: "语速", steps: "步数", cfg_strength: "CFG", seed: "种子", clear_confirm: "清空所有等待和正在说的内容？",
    lagged: "事件太多，已刷新", listeners: "收听", sound: "声音调节", master: "总音量", rate: "语速",
    default_voice_label: "默认声音", config_voice: "配置文件",
  },
  en: {
    title: "Control room", engine: "Engine", logout: "Sign out", say: "Say something", say_ph: "Text to speak", voice: "Voice",
    priority: "Priority", speak: "Speak", queue: "Queue", skip: "Skip", pause: "Pause", resume: "Resume", clear: "Clear",
    feed: "Live feed", history: "History", voices: "Voices", upload: "Upload a reference recording",
    voice_id: "voice id (new or existing)", transcript: "what the recording says, word for word", upload_go: "Upload",
    sources: "Sources", room_or_channel: "room / channel, or its URL", add: "Add", sinks: "Outputs",
    overlay: "Overlay (OBS)", overlay_show: "Show the overlay URL", default_voice: "default", speaking: "speaking",
    prepared: "prepared", waiting: "waiting", remove: "Remove", play: "Play", download: "Download", preview: "Preview",
    restore: "Restore", stop: "Stop", start: "Start", uploaded: "uploaded", loading: "loading", running: "running",
    stopping: "stopping", received: "received", filtered: "not read", spoken: "said", cut: "cut", dropped: "dropped",
    failed: "failed", expired: "expired", paused_state: "paused", queued: "queued", done: "done", nothing: "(empty)",
    copied: "Overlay URL copied", speed: "speed", steps: "steps", cfg_strength: "CFG", seed: "seed",
    clear_confirm: "Drop everything waiting and speaking?", lagged: "too many events: refreshed", listeners: "listeners",
    sound: "Sound", master: "Master", rate: "Rate", default_voice_label: "Default voice", config_voice: "config",
  },
};
let lang = localStorage.getItem("ishowtts.lang") || ((navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en");
const t = (k) => (T[lang] && T[lang][k]) || T.en[k] || k;
const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

function applyLang() {
  document.documentElement.lang = lang;
  for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  for (const e of document.querySelectorAll("[data-i18n-ph]")) e.placeholder = t(e.dataset.i18nPh);
  $("lang").textContent = lang === "zh" ? "EN" : "中文";
  refreshAll();
}

let toastTimer;
function toast(msg, error = false) {
  const box = $("toast");
  box.textContent = msg;
  box.className = "show" + (error ? " error" : "");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.className = ""), error ? 6000 : 2500);
}

async function api(verb, params = null) {
  const opts = params === null ? { method: "GET" } : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(params),
  };
  const r = await fetch("/api/" + verb, { credentials: "same-origin", ...opts });
  if (r.status === 401) { location.href = "/login"; throw new Error("signed out"); }
  const body = await r.json();
  if (body.error) { toast(body.error.message, true); throw new Error(body.error.message); }
  return body;
}
const act = (verb, params = {}) => api(verb, params).catch(() => null);

// -- state at a glance -------------------------------------------------------------------------
let voicesCache = { voices: [], engines: {} };

function renderStatus(s) {
  $("state").textContent = s.speaker && s.speaker.paused ? t("paused_state") : t(s.state) || s.state;
  $("state").className = "pill " + (s.state === "running" ? "level-ok" : "level-warn");
  const eng = s.engine || {};
  $("engine").textContent = (eng.active || "…") + (eng.fallback_reason ? " ⚠" : "");
  $("engine").title = eng.fallback_reason || "";
  $("rtf").textContent = s.speaker && s.speaker.rtf_median !== null ? s.speaker.rtf_median : "-";
  renderSound(s.sound);
  counts = { ...(s.counts || {}) };
  renderCounts();
  const src = $("sources-list");
  src.replaceChildren(...(s.sources || []).map((x) => el("li", {},
    el("span", { class: "dot " + x.state }), el("span", { class: "text" }, x.name, " ",
      el("span", { class: "meta" }, x.state + (x.detail ? " — " + x.detail : ""))),
    x.state === "stopped" || x.state === "finished" || x.state === "failed"
      ? el("button", { class: "small", "data-source": x.name, onclick: () => act("sources.start", { name: x.name }).then(refreshSoon) }, t("start"))
      : el("button", { class: "small", "data-source": x.name, onclick: () => act("sources.stop", { name: x.name }).then(refreshSoon) }, t("stop")))));
  if (!src.children.length) src.append(el("li", { class: "meta" }, t("nothing")));
  $("sinks-list").replaceChildren(...(s.sinks || []).map((x) => el("li", {},
    el("span", { class: "dot " + x.state }), el("span", { class: "text" }, x.name, " ",
      el("span", { class: "meta" }, x.state + (x.listeners !== undefined ? ` · ${t("listeners")} ${x.listeners}` : "") + (x.detail ? " — " + x.detail : ""))))));
}

// -- live sound: volumes, rate, default voice (kept across restarts by the daemon) --------------
let sound = null;
function renderSound(snd) {
  if (!snd || snd.master === undefined) return;
  sound = snd;
  const box = $("sound-volumes");
  for (const [name, pct] of Object.entries(snd.sinks)) {
    let input = box.querySelector(`input[data-volume="${CSS.escape(name)}"]`);
    if (!input) {
      const out = el("output", {}, pct + "%");
      input = el("input", { type: "range", min: 0, max: 150, step: 1, value: pct, "data-volume": name, id: "vol-sink-" + name });
      wireVolume(input, out);
      box.append(el("label", { class: "slider", title: name }, el("span", {}, name), input, out));
    }
    setSlider(input, pct, pct + "%");
  }
  for (const input of box.querySelectorAll("input[data-volume]")) {  // a sink that is gone
    if (input.dataset.volume && !(input.dataset.volume in snd.sinks)) input.parentElement.remove();
  }
  setSlider($("vol-master"), snd.master, snd.master + "%");
  setSlider($("rate"), snd.rate, snd.rate + "×");
  renderDefaultVoice();
  $("sound-notes").textContent = (snd.notes || []).concat(snd.problem ? [snd.problem] : []).join(" · ");
}
function setSlider(input, value, label) {
  if (document.activeElement === input && input.dataset.dragging) return;  // never move it under the user's hand
  input.value = value;
  input.nextElementSibling.textContent = label;
}
function wireVolume(input, out) {
  input.addEventListener("input", () => { input.dataset.dragging = "1"; out.textContent = input.value + "%"; });
  input.addEventListener("change", () => {
    delete input.dataset.dragging;
    const params = { percent: Number(input.value) };
    if (input.dataset.volume) params.sink = input.dataset.volume;
    act("volume", params).then((r) => r && renderSound(r));
  });
}
function renderDefaultVoice() {
  const sel = $("default-voice");
  if (document.activeElement === sel || !sound) return;
  const cfg = sound.default_voice_config;
  sel.replaceChildren(el("option", { value: "" }, `(${t("config_voice")}${cfg ? ": " + cfg : ""})`),
    ...voicesCache.voices.filter((x) => !x.error).map((x) => el("option", { value: x.id }, `${x.id} · ${x.engine}`)));
  sel.value = sound.default_voice_chosen || "";
}

function renderHealth(h) {
  const box = $("health");
  box.textContent = "health " + h.status;
  box.className = "pill level-" + h.status;
  $("health-reasons").replaceChildren(...h.checks.filter((c) => c.level !== "ok")
    .map((c) => el("li", {}, `${c.check}: ${c.reason}` + (c.fix ? ` — ${c.fix}` : ""))));
}

function queueItem(u, state) {
  return el("li", { class: state === "speaking" ? "speaking" : "", "data-id": u.id },
    el("span", { class: "badge " + u.priority }, u.priority),
    el("span", { class: "text" }, u.user ? el("b", {}, u.user + ": ") : null, u.text),
    el("span", { class: "meta" }, t(state)),
    el("button", { class: "small", title: t("remove"), onclick: () => act("queue.remove", { id: u.id }).then(refreshSoon) }, "✕"));
}

function renderQueue(q) {
  const items = [];
  if (q.speaking) items.push(queueItem(q.speaking, "speaking"));
  for (const u of q.prepared) items.push(queueItem(u, "prepared"));
  for (const u of q.pending) items.push(queueItem(u, "waiting"));
  $("queue-list").replaceChildren(...(items.length ? items : [el("li", { class: "meta" }, t("nothing"))]));
  $("pause").hidden = q.paused;
  $("resume").hidden = !q.paused;
}

function renderHistory(h) {
  $("history-list").replaceChildren(...h.history.map((e) => el("li", { "data-id": e.id },
    el("span", { class: "meta" }, new Date(e.ts * 1000).toLocaleTimeString()),
    el("span", { class: "text" }, e.user ? el("b", {}, e.user + ": ") : null, e.text,
      el("span", { class: "meta" }, ` ${e.voice} · RTF ${e.rtf ?? "-"}${e.cut ? " · " + t("cut") : ""}`)),
    e.has_audio ? el("button", { class: "small play", onclick: () => play(`/api/history/${e.id}.wav`) }, "▶") : null,
    e.has_audio ? el("a", { href: `/api/history/${e.id}.wav?download=1`, download: `ishowtts-${e.id}.wav`, title: t("download") }, "⤓") : null)));
}

function play(url) {
  const p = $("player");
  p.src = url;
  p.play().catch(() => {});
}

function renderVoices(v) {
  voicesCache = v;
  const sel = $("say-voice");
  const keep = sel.value;
  sel.replaceChildren(el("option", { value: "" }, `(${t("default_voice")}${v.default ? ": " + v.default : ""})`),
    ...v.voices.filter((x) => !x.error).map((x) => el("option", { value: x.id }, `${x.id} · ${x.engine}`)));
  sel.value = keep;
  $("voice-ids").replaceChildren(...v.voices.map((x) => el("option", { value: x.id })));
  const eng = $("upload-engine");
  const cloners = Object.entries(v.engines).filter(([, e]) => e.clones).map(([n]) => n);
  eng.replaceChildren(...cloners.map((n) => el("option", { value: n }, n)));
  $("upload-button").disabled = !cloners.length;
  $("voices-list").replaceChildren(...v.voices.map((x) => el("li", { "data-voice": x.id },
    el("span", { class: "text" }, el("b", {}, x.id), " ", el("span", { class: "meta" },
      x.error ? x.error : `${x.engine}${x.language ? " · " + x.language : ""}${x.uploaded ? " · " + t("uploaded") : ""}`)),
    x.error ? null : el("button", { class: "small", onclick: () => play(`/api/voices/${encodeURIComponent(x.id)}/preview.wav`) }, t("preview")),
    x.uploaded ? el("button", { class: "small", onclick: () => act("voices.restore", { id: x.id }).then(loadVoices) }, t("restore")) : null)));
  renderOptions();
  renderDefaultVoice();
}

function renderOptions() {
  const id = $("say-voice").value;
  const voice = voicesCache.voices.find((x) => x.id === id) || voicesCache.voices.find((x) => x.active && !x.error);
  const engine = voice && voicesCache.engines[voice.engine];
  const box = $("say-options");
  box.replaceChildren(...Object.entries((engine && engine.options) || {}).map(([name, spec]) => el("label", { title: spec.description || "" },
    t(name), el("input", { type: "number", "data-option": name, id: "opt-" + name, min: spec.minimum, max: spec.maximum,
      step: spec.type === "integer" ? 1 : name === "speed" ? 0.05 : 0.1, placeholder: name === "speed" ? "1.0" : "" }))));
}

// -- refreshing ----------------------------------------------------------------------------------
const loadStatus = () => api("status").then(renderStatus).catch(() => {});
const loadHealth = () => api("health").then(renderHealth).catch(() => {});
const loadQueue = () => api("queue").then(renderQueue).catch(() => {});
const loadHistory = () => api("history?limit=50").then(renderHistory).catch(() => {});
const loadVoices = () => api("voices").then(renderVoices).catch(() => {});
function refreshAll() { loadStatus(); loadQueue(); loadHistory(); loadVoices(); loadHealth(); }
// events say what changed; the page asks for fresh state at most a few times a second, and only
// for what an event can have changed (20 pages open must not poll the daemon on every chat line)
const QUEUE_EVENTS = new Set(["queued", "merged", "speaking", "spoken", "cut", "dropped", "expired", "failed", "paused", "resumed", "flood"]);
const STATUS_EVENTS = new Set(["source.state", "sink.state", "paused", "resumed", "ready", "engine.ready", "engine.fallback", "web.listening",
  "volume.changed", "rate.changed", "voice.default_changed", "live.problem"]);
const COUNTED = new Set(["received", "filtered", "merged", "queued", "dropped", "expired", "spoken", "failed", "cut"]);
let counts = {};
let refreshTimer = null;
let want = { status: false, queue: false };
function refreshSoon(what = { status: true, queue: true }) {
  want = { status: want.status || what.status, queue: want.queue || what.queue };
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    if (want.status) loadStatus();
    if (want.queue) loadQueue();
    want = { status: false, queue: false };
  }, 1000 + Math.random() * 500);  // at most about once a second per page: the feed and counts are
}  // live from events; pages opened together (a dock, a phone, a second screen) refresh apart
function renderCounts() {
  $("counts").textContent = ["received", "filtered", "queued", "spoken", "dropped", "failed"]
    .map((k) => `${t(k)} ${counts[k] || 0}`).join(" · ");
}

// -- the live feed -------------------------------------------------------------------------------
const FEED = new Set(["received", "filtered", "queued", "spoken", "cut", "dropped", "failed", "expired"]);
function feed(ev) {
  if (!FEED.has(ev.event)) return;
  const detail = ev.event === "filtered" ? ` — ${ev.reason}${ev.detail ? ": " + ev.detail : ""}`
    : ["cut", "dropped", "failed", "expired"].includes(ev.event) ? ` — ${ev.reason || ""}${ev.error ? ": " + ev.error : ""}`
    : ev.event === "spoken" ? ` — RTF ${ev.rtf}` : "";
  const list = $("feed");
  list.prepend(el("li", { class: "ev-" + ev.event, "data-event": ev.event, "data-id": ev.id ?? "" },
    el("span", { class: "meta" }, new Date(ev.ts * 1000).toLocaleTimeString()),
    el("span", { class: "badge " + ev.event }, t(ev.event)),
    el("span", { class: "text" }, ev.user ? el("b", {}, ev.user + ": ") : null, ev.text || "", el("span", { class: "meta" }, detail))));
  while (list.children.length > 200) list.lastChild.remove();
}

function connect(delay = 500) {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/events");
  ws.onopen = () => { delay = 500; refreshAll(); };
  ws.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    if (ev.status) return renderStatus(ev.status);
    if (ev.event === "lagged") { toast(t("lagged")); return refreshAll(); }
    feed(ev);
    if (COUNTED.has(ev.event)) { counts[ev.event] = (counts[ev.event] || 0) + 1; renderCounts(); }
    if (ev.event === "spoken" || ev.event === "cut") loadHistory();
    if (ev.event.startsWith("voice")) loadVoices();
    if (ev.event.startsWith("health")) loadHealth();
    if (QUEUE_EVENTS.has(ev.event) || STATUS_EVENTS.has(ev.event)) {
      refreshSoon({ queue: QUEUE_EVENTS.has(ev.event), status: STATUS_EVENTS.has(ev.event) });
    }
  };
  ws.onclose = () => setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
}

// -- actions -------------------------------------------------------------------------------------
function wire() {
  $("lang").onclick = () => { lang = lang === "zh" ? "en" : "zh"; localStorage.setItem("ishowtts.lang", lang); applyLang(); };
  $("say-voice").onchange = renderOptions;
  $("say-form").onsubmit = async (e) => {
    e.preventDefault();
    const options = {};
    for (const input of document.querySelectorAll("[data-option]")) {
      if (input.value !== "") options[input.dataset.option] = Number(input.value);
    }
    const params = { text: $("say-text").value, priority: $("say-priority").value, options };
    if ($("say-voice").value) params.voice = $("say-voice").value;
    const r = await act("say", params);
    if (r) { $("say-text").value = ""; toast(`${t("queued")} #${r.id}`); refreshSoon(); }
  };
  $("skip").onclick = () => act("skip").then(refreshSoon);
  $("pause").onclick = () => act("pause").then(refreshSoon);
  $("resume").onclick = () => act("resume").then(refreshSoon);
  $("clear").onclick = () => confirm(t("clear_confirm")) && act("clear").then(refreshSoon);
  $("upload-form").onsubmit = async (e) => {
    e.preventDefault();
    const form = new FormData();
    form.append("file", $("upload-file").files[0]);
    form.append("transcript", $("upload-transcript").value);
    if ($("upload-engine").value) form.append("engine", $("upload-engine").value);
    $("upload-button").disabled = true;
    try {
      const r = await fetch(`/api/voices/${encodeURIComponent($("upload-id").value.trim())}/upload`,
        { method: "POST", body: form, credentials: "same-origin" });
      const body = await r.json();
      if (body.error) toast(body.error.message, true);
      else { toast(`${body.id}: ${t("done")} (${body.seconds} s, ${body.engine})`); $("upload-form").reset(); loadVoices(); }
    } finally { $("upload-button").disabled = false; }
  };
  $("source-form").onsubmit = async (e) => {
    e.preventDefault();
    const type = $("source-type").value;
    const value = $("source-value").value.trim();
    // a number, a name or a pasted address: the daemon normalises it and names the source TYPE-ROOM
    const settings = type === "bilibili" ? { room_id: value } : { channel: value };
    const r = await act("sources.add", { type, settings });
    if (r) { $("source-value").value = ""; loadStatus(); }
  };
  wireVolume($("vol-master"), $("vol-master-value"));
  $("rate").addEventListener("input", () => { $("rate").dataset.dragging = "1"; $("rate-value").textContent = $("rate").value + "×"; });
  $("rate").addEventListener("change", () => {
    delete $("rate").dataset.dragging;
    act("rate", { rate: Number($("rate").value) }).then((r) => r && renderSound(r));
  });
  $("default-voice").onchange = () => {
    const id = $("default-voice").value;
    act("voices.default", { id: id || null }).then((r) => { if (r) { renderSound(r); loadVoices(); } });
    $("default-voice").blur();
  };
  $("overlay-link").onclick = async () => {
    const r = await act("web");
    if (!r || !r.overlay_url) return;
    const box = $("overlay-url");
    box.hidden = false;
    box.value = r.overlay_url;
    box.select();
    if (navigator.clipboard) navigator.clipboard.writeText(r.overlay_url).then(() => toast(t("copied")), () => {});
  };
}

wire();
applyLang();
connect();
setInterval(() => { loadStatus(); loadHealth(); }, 5000);
