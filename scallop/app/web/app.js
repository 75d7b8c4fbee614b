// Operator screen. Plain JS, no build step: the line's state arrives as server-sent events
// (/api/events); the camera view is refetched whenever the frame counter moves, one fetch at
// a time, so a slow network shows older frames instead of a growing backlog. Every word comes
// from the message catalogue of the chosen language (/static/i18n/<lang>.json).
"use strict";

const $ = (id) => document.getElementById(id);
const NEEDS = { start: "operator", pause: "operator", stop: "operator", reset: "operator" };
const LANGS = ["ja", "en"];
const LOCALES = { ja: "ja-JP", en: "en-GB" };

let session = null;          // {user, role} or null
let lastState = null;
let wantFrame = null;        // newest frame number not yet fetched
let frameBusy = false;
let frameUrl = null;
let pinThen = null;          // what to do after a successful login
let pinTitle = ["pin.title", null];
let pinValue = "";
let toastTimer = null;
let lang = null;
let cat = {};
let uvTimer = null;          // refreshes the fluorescence channel while the engineer panel is open
let engTimer = null;         // refreshes the engineer panel's configuration while it is open
const ENGINEER_REFRESH_MS = 5000;
let uvBusy = false;
let uvUrl = null;
let uvLast = null;           // the channel's last figures, redrawn when the language changes
window.__i18nMissing = [];   // keys asked for but not in the catalogue (the browser tests read it)

// ------------------------------------------------------------------ words and numbers

// The catalogue's text for key with its {name} placeholders filled in; a parameter "#key" is
// itself looked up (same rules as scallop/app/i18n.py).
function t(key, params) {
  const s = cat[key];
  if (s === undefined) {
    if (!window.__i18nMissing.includes(key)) window.__i18nMissing.push(key);
    return key;
  }
  return s.replace(/\{(\w+)\}/g, (m, name) => {
    if (!params || !(name in params)) return m;
    const v = params[name];
    if (typeof v === "string" && v[0] === "#" && cat[v.slice(1)] !== undefined) return cat[v.slice(1)];
    return String(v);
  });
}

// A key that may not exist (a reason or source the catalogue does not know yet): the raw value.
function tOr(key, raw, params) { return cat[key] !== undefined ? t(key, params) : raw; }

function num(v, digits) {
  if (v === null || v === undefined || !isFinite(v)) return t("value.unknown");
  return new Intl.NumberFormat(LOCALES[lang], { minimumFractionDigits: digits || 0, maximumFractionDigits: digits || 0 })
    .format(v);
}

function pct(share, digits) {
  if (share === null || share === undefined || !isFinite(share)) return t("value.unknown");
  return t("value.percent", { value: num(100 * share, digits) });
}

function clock(epochS) {
  return new Date(epochS * 1000).toLocaleTimeString(LOCALES[lang], { hour12: false });
}

async function setLanguage(l) {
  if (!LANGS.includes(l)) l = LANGS[0];
  const r = await fetch("/static/i18n/" + l + ".json", { cache: "no-cache" });
  if (!r.ok) throw new Error("HTTP " + r.status);
  cat = await r.json();
  lang = l;
  document.documentElement.lang = l;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-alt]")) el.alt = t(el.dataset.i18nAlt);
  $("config-label").textContent = t("engineer.changes", { example: '{"vision.min_uro_confidence": 0.6}' });
  $("pin-title").textContent = t(pinTitle[0], pinTitle[1]);
  setSession(session);
  if (lastState) render(lastState);
  if (uvLast) renderChannel(uvLast);
}

// ------------------------------------------------------------------ API

async function api(method, path, body) {
  const opt = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    opt.headers["Content-Type"] = "application/json";
    opt.body = JSON.stringify(body);
  }
  let r;
  try { r = await fetch(path, opt); } catch (e) {
    const err = new Error(t("error.network"));
    err.status = 0;
    throw err;
  }
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const err = new Error((data && data.error) || r.statusText || ("HTTP " + r.status));
    err.status = r.status;
    err.code = data && data.code;
    err.params = (data && data.params) || {};
    throw err;
  }
  return data;
}

// An error as the operator reads it: the catalogue's words where the server named them, else
// the server's own text (engineers' messages: keys and values) as data.
function errorWords(e) {
  if (e.code && cat["error." + e.code] !== undefined) return t("error." + e.code, e.params);
  if (e.status === 0) return e.message;
  return t("error.http", { status: e.status, detail: e.message });
}

function toast(text, isError) {
  const tt = $("toast");
  tt.textContent = text;
  tt.className = isError ? "error" : "";
  tt.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { tt.hidden = true; }, isError ? 6000 : 3000);
}

// Run an action that needs a login; on 401 ask for the PIN and try once more.
async function withLogin(role, title, fn) {
  if (!session) { askPin(title, () => withLogin(role, title, fn)); return; }
  try {
    await fn();
  } catch (e) {
    if (e.status === 401) {
      setSession(null);
      askPin(title, () => withLogin(role, title, fn));
    } else if (e.status === 403 && e.code === "role_needed") {
      toast(errorWords(e), true);
      askPin(["pin.engineer", null], () => withLogin(role, title, fn));
    } else {
      toast(errorWords(e), true);
    }
  }
}

// ------------------------------------------------------------------ login

function setSession(s) {
  session = s;
  $("user-name").textContent = s ? t("screen.user", { user: s.user, role: "#role." + s.role }) : t("screen.not_logged_in");
  $("login-btn").textContent = t(s ? "screen.logout" : "screen.login");
  // Engineer-only things leave the screen with the engineer's login (logged out, expired, or an
  // operator logged in instead): the panel closes and forgets what it showed.
  if (!s || s.role !== "engineer") forgetEngineer();
}

function askPin(title, then) {
  pinThen = then || null;
  pinValue = "";
  pinTitle = title || ["pin.title", null];
  $("pin-title").textContent = t(pinTitle[0], pinTitle[1]);
  showPin();
  $("pinpad").hidden = false;
}

function showPin() { $("pin-display").textContent = "●".repeat(pinValue.length) || "\u00a0"; }

function pinKey(k) {
  if (k === "clear") pinValue = "";
  else if (k === "back") pinValue = pinValue.slice(0, -1);
  else if (/^[0-9]$/.test(k) && pinValue.length < 8) pinValue += k;
  showPin();
}

async function pinOk() {
  const pin = pinValue;
  pinValue = "";
  showPin();
  try {
    const r = await api("POST", "/api/login", { pin });
    setSession({ user: r.user, role: r.role });
    $("pinpad").hidden = true;
    toast(t("toast.logged_in", { user: r.user, role: "#role." + r.role }));
    const then = pinThen;
    pinThen = null;
    if (then) then();
  } catch (e) {
    toast(errorWords(e), true);
  }
}

async function loginButton() {
  if (!session) { askPin(["pin.title", null], null); return; }
  try { await api("POST", "/api/logout"); } catch (e) { /* logged out either way */ }
  setSession(null);
  toast(t("toast.logged_out"));
}

// ------------------------------------------------------------------ control

function control(action) {
  withLogin(NEEDS[action], ["pin.for", { action: "#action." + action }], async () => {
    const r = await api("POST", "/api/" + action);
    toast(t("toast.action", { action: "#action." + action, state: "#state." + r.state }));
  });
}

async function estop() {
  // Never waits for a login: the server accepts e-stop from anyone at the screen.
  try {
    const r = await api("POST", "/api/estop");
    toast(t("toast.estop", { state: "#state." + r.state }), true);
  } catch (e) {
    toast(t("toast.estop_failed", { error: errorWords(e) }), true);
  }
}

function ackAlarm(id) {
  withLogin("operator", ["pin.for", { action: "#action.ack" }], async () => {
    await api("POST", "/api/alarms/" + id + "/ack");
    toast(t("toast.acked"));
  });
}

// ------------------------------------------------------------------ recipes

async function openRecipes() {
  let data;
  try { data = await api("GET", "/api/recipes"); } catch (e) { toast(errorWords(e), true); return; }
  const list = $("recipe-list");
  list.textContent = "";
  for (const r of data.recipes) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "btn btn-plain" + (r.name === data.current ? " current" : "");
    b.dataset.recipe = r.name;
    const name = document.createElement("span");
    name.dataset.raw = "";
    name.textContent = r.name;
    const d = document.createElement("span");
    d.className = "recipe-desc";
    d.textContent = t("recipes.detail", {
      low: num(r.product_size_mm[0]), high: num(r.product_size_mm[1]), speed: num(r.belt_speed_mm_s),
    });
    b.append(name, d);
    if (r.description) {
      const note = document.createElement("span");
      note.className = "recipe-desc";
      note.dataset.raw = "";  // the plant's own words, from its configuration
      note.textContent = r.description;
      b.appendChild(note);
    }
    b.addEventListener("click", () => chooseRecipe(r.name));
    list.appendChild(b);
  }
  $("recipes").hidden = false;
}

function chooseRecipe(name) {
  withLogin("operator", ["pin.for", { action: "#action.recipe" }], async () => {
    await api("POST", "/api/recipe", { name });
    $("recipes").hidden = true;
    toast(t("toast.recipe", { name }));
  });
}

// ------------------------------------------------------------------ lot and shift check

function openLot() {
  $("lot-input").value = (lastState && lastState.lot) || "";
  $("lot").hidden = false;
  $("lot-input").focus();
}

function setLot() {
  const lot = $("lot-input").value;
  withLogin("operator", ["pin.for", { action: "#action.lot" }], async () => {
    const r = await api("POST", "/api/lot", { lot });
    $("lot").hidden = true;
    toast(t("toast.lot", { lot: r.lot || "—" }));
  });
}

function renderShiftCheck(c) {
  const box = $("shift-check");
  box.hidden = !(c && c.required);
  if (box.hidden) return;
  box.dataset.state = c.state;
  const p = {
    seen: num(c.seen), of: num(c.of), with_uro: num(c.with_uro), without_uro: num(c.without_uro),
    user: c.user || "—", until: c.valid_until ? clock(c.valid_until) : "—",
  };
  setText("shift-check-text", t("shift." + c.state, p));
}

function overrideCheck() {
  const reason = $("override-reason").value.trim();
  if (!reason) { toast(t("toast.need_reason"), true); return; }
  withLogin("engineer", ["pin.engineer", null], async () => {
    await api("POST", "/api/shift_check/override", { reason });
    $("override-reason").value = "";
    toast(t("toast.override"));
  });
}

// ------------------------------------------------------------------ engineer

function openEngineer() {
  withLogin("engineer", ["pin.engineer", null], async () => {
    const cfg = await api("GET", "/api/config");
    $("config-view").textContent = JSON.stringify(cfg, null, 2);
    renderLatency(lastState);
    renderModelLoop(lastState);
    $("engineer").hidden = false;
    openChannel();
    // While open, the panel asks for the configuration now and then: it follows a change made
    // elsewhere, and a login that ended (expired, or logged out on another screen) closes it.
    clearInterval(engTimer);
    engTimer = setInterval(refreshEngineer, ENGINEER_REFRESH_MS);
  });
}

function closeEngineer() {
  $("engineer").hidden = true;
  clearInterval(engTimer);
  engTimer = null;
  closeChannel();
}

// What the panel showed, gone: the configuration, the fluorescence figures and image.
function forgetEngineer() {
  closeEngineer();
  $("config-view").textContent = "";
  renderChannel(null);
  const img = $("uv-live");
  img.removeAttribute("src");
  if (uvUrl) { URL.revokeObjectURL(uvUrl); uvUrl = null; }
  img.dataset.pairs = "-1";
}

// A request the engineer's login no longer covers: 401 the login ended, 403 another role's.
function engineerRefused(e) {
  if (e.status === 401) setSession(null);
  else if (e.status === 403) forgetEngineer();
}

async function refreshEngineer() {
  try {
    const cfg = await api("GET", "/api/config");
    if (engTimer === null) return;  // the panel closed meanwhile
    setText("config-view", JSON.stringify(cfg, null, 2));
  } catch (e) {
    engineerRefused(e);  /* no answer: the next tick asks again */
  }
}

function applyConfig() {
  let changes;
  try { changes = JSON.parse($("config-changes").value); } catch (e) {
    toast(t("toast.bad_json", { error: e.message }), true);
    return;
  }
  withLogin("engineer", ["pin.engineer", null], async () => {
    const r = await api("POST", "/api/config", { changes });
    $("config-view").textContent = JSON.stringify(r.config, null, 2);
    toast(t("toast.config"));
  });
}

function renderLatency(d) {
  if (!d) return;
  const parts = Object.entries(d.latency_ms || {}).map(([stage, q]) =>
    t("engineer.stage", { stage, p50: num(q.p50, 1), p99: num(q.p99, 1) }));
  $("latency").textContent = t("engineer.latency", {
    stages: parts.join(" · ") || t("value.unknown"), frames: num(d.frames), dropped: num(d.frames_dropped),
  });
  // The line's own drift check: how far the camera says the belt moved against the encoder.
  const r = d.belt_scale;
  setText("belt-scale", r === null || r === undefined ? t("engineer.belt_scale_none")
    : t("engineer.belt_scale", { ratio: num(r, 3), off: (r >= 1 ? "+" : "") + num(100 * (r - 1), 1) }));
}

function toggleCapture() {
  const on = !(lastState && lastState.capture && lastState.capture.active);
  withLogin("engineer", ["pin.engineer", null], async () => {
    await api("POST", "/api/capture", { on });
    toast(t(on ? "toast.capture_on" : "toast.capture_off"));
  });
}

// The model loop on the engineer panel: the live model, the shadow's agreement, the capture.
function renderModelLoop(d) {
  if (!d) return;
  const m = d.model || {};
  setText("model-line", m.name ? t("engineer.model", { name: m.name, hash: (m.sha256 || "").slice(0, 12) }) : "");
  const sh = d.shadow || {};
  setText("shadow-line", sh.model ? t("engineer.shadow", {
    name: sh.model, frames: num(sh.frames), skipped: num((sh.skipped_busy || 0) + (sh.skipped_sample || 0)),
    verdict: pct(sh.verdict_agreement, 1), scallops: num(sh.scallops), grasp: pct(sh.grasp_agreement, 1),
  }) : t("engineer.shadow_off"));
  const c = d.capture || {};
  const dropped = Object.values(c.dropped || {}).reduce((a, b) => a + b, 0);
  setText("capture-line", t("engineer.capture", {
    state: t(c.active ? "engineer.capturing" : "engineer.not_capturing"), kept: num(c.kept), unsure: num(c.kept_unsure),
    mb: num((c.bytes || 0) / 1e6, 1), budget: num((c.budget_bytes || 0) / 1e6, 0), dropped: num(dropped),
  }));
  const b = $("capture-toggle");
  b.hidden = !("active" in c);
  setText("capture-toggle", t(c.active ? "engineer.capture_off" : "engineer.capture_on"));
}

// ------------------------------------------------------------------ fluorescence channel (engineer panel)

// The healthy levels come with the figures (belt_dark_max, glow_min): the line's own limits,
// from the spec's grey levels under UV (scallop/app/line/channel.py).
// As often as the main view can change (state events come ~4 per second), without queueing.
const UV_REFRESH_MS = 500;

function openChannel() {
  closeChannel();
  uvTimer = setInterval(refreshChannel, UV_REFRESH_MS);
  refreshChannel();
}

function closeChannel() {
  clearInterval(uvTimer);
  uvTimer = null;
}

// One refresh at a time: the figures, then the image only when the pair counter moved, so a slow
// network shows an older image instead of a growing backlog (as the main view does).
async function refreshChannel() {
  if (uvBusy) return;
  uvBusy = true;
  try {
    const c = await api("GET", "/api/channel");
    if (uvTimer === null) return;  // the panel closed meanwhile
    renderChannel(c);
    if (c.pairs && String(c.pairs) !== $("uv-live").dataset.pairs) await channelImage(c.pairs);
    else if (!c.pairs) $("uv-none").hidden = false;
  } catch (e) {
    if (e.status === 404) {
      // No channel on this line: nothing to show, nothing to ask again until the panel reopens.
      renderChannel(null);
      closeChannel();
    } else if (e.status === 401 || e.status === 403) {
      engineerRefused(e);  // logged out meanwhile: the panel goes; reopening it asks for the PIN
    }
    /* no answer: the next tick asks again */
  } finally {
    uvBusy = false;
  }
}

async function channelImage(pairs) {
  const r = await fetch("/api/uv.jpg?n=" + pairs, { cache: "no-store", credentials: "same-origin" });
  const img = $("uv-live");
  if (!r.ok) {
    img.dataset.pairs = String(pairs);  // asked again when the pair counter moves, as the main view
    $("uv-none").hidden = false;
    return;
  }
  const blob = await r.blob();
  if (uvTimer === null) return;  // the panel closed (or its login ended) meanwhile
  const url = URL.createObjectURL(blob);
  await new Promise((resolve) => {
    img.onload = resolve;
    img.onerror = resolve;
    img.src = url;
  });
  if (uvUrl) URL.revokeObjectURL(uvUrl);
  uvUrl = url;
  img.dataset.pairs = String(pairs);
  $("uv-none").hidden = true;
}

// A level with its verdict in plain words; no level (no pair yet) is no verdict.
// ``unsure``: words for a level that fails ``ok`` but cannot be judged now (no verdict then).
function levelLine(id, key, level, ok, okKey, badKey, unsure = null) {
  const el = $(id);
  const known = level !== null && level !== undefined && isFinite(level);
  const good = known && ok(level);
  const judged = known && (good || unsure === null);
  el.dataset.verdict = judged ? (good ? "ok" : "bad") : "unknown";
  const verdict = !known ? t("uv.no_pair") : judged ? t(good ? okKey : badKey) : unsure;
  setText(id, t(key, { level: num(level, 1), verdict }));
}

function renderChannel(c) {
  uvLast = c;
  $("uv-box").hidden = !c;
  if (!c) return;
  const dropped = Object.entries(c.dropped || {}).filter(([, n]) => n > 0);
  const total = dropped.reduce((a, [, n]) => a + n, 0);
  setText("uv-pairs", t("uv.pairs", {
    setup: tOr("uv.setup." + c.setup, c.setup), pairs: num(c.pairs), dropped: num(total),
    in_a_row: num(c.dropped_in_a_row),
  }));
  setText("uv-drops", dropped.length ? t("uv.drops", {
    reasons: dropped.map(([why, n]) => t("uv.drop_count", { reason: tOr("uv.drop." + why, why), n: num(n) })).join(" · "),
  }) : "");
  setText("uv-timing", t("uv.timing", { dt: num(c.last_dt_ms, 1), shift: num(c.last_shift_mm, 1) }));
  levelLine("uv-belt", "uv.belt", c.belt_level, (v) => v <= c.belt_dark_max, "uv.belt_dark", "uv.belt_bright");
  // Nothing much to glow in view: a low level gets no verdict, not a red "UV off".
  const few = c.scallops_in_view != null && c.scallops_in_view < c.glow_needs_scallops;
  levelLine("uv-glow", "uv.glow", c.glow_level, (v) => v >= c.glow_min, "uv.glowing", "uv.no_glow",
    few ? t("uv.few_scallops", { n: num(c.scallops_in_view) }) : null);
  // Where the glow lies from the uros the colour camera sees: measured once enough uros passed.
  // The verdict is the line's own (its limits, with the way back under a lower one).
  const off = c.registration_offset_mm;
  if (off) {
    levelLine("uv-reg", "uv.reg", Math.hypot(off[0], off[1]), () => !c.misregistered, "uv.reg_ok", "uv.reg_off");
  } else if (c.misregistered) {
    $("uv-reg").dataset.verdict = "bad";
    setText("uv-reg", t("uv.reg_no_glow"));
  } else {
    $("uv-reg").dataset.verdict = "unknown";
    setText("uv-reg", t("uv.reg_none", { n: num(c.registration_needs_uros) }));
  }
  $("uv-lost").hidden = !c.lost;
}

// ------------------------------------------------------------------ rendering

function setText(id, text) {
  const el = $(id);
  if (el.textContent !== String(text)) el.textContent = text;
}

function render(d) {
  if (d.error) { toast(t("toast.line_error", { error: d.error }), true); return; }
  lastState = d;
  if (d.version) $("version").textContent = "scallop-uro-line " + d.version;
  const st = $("state");
  st.textContent = t("state." + d.state);
  st.className = "state state-" + d.state;
  setText("recipe-name", d.recipe || "—");
  setText("lot-name", d.lot || "—");
  renderShiftCheck(d.shift_check);
  setText("n-per-minute", num(d.per_minute, 1));
  setText("n-removal", pct(d.removal_rate, 1));
  setText("n-seen", num(d.seen));
  setText("n-picked", num(d.picked));
  setText("n-missed", num(d.missed));
  setText("n-adductor", num(d.adductor_hits));
  setText("n-skipped", num(d.skipped));
  const disp = d.dispositions || {};
  setText("n-diverted", num(disp.diverted || 0));
  setText("n-not-diverted", num(disp.not_diverted || 0));
  $("not-diverted-box").hidden = !disp.not_diverted;
  // The gate held open: the rework lane takes every scallop, whatever the counts above say.
  const rw = d.all_to_rework || {};
  $("all-rework").hidden = !rw.why;
  if (rw.why) {
    const since = rw.for_s < 60 ? t("rework_since.seconds", { n: num(Math.floor(rw.for_s)) })
      : t("rework_since.minutes", { n: num(Math.floor(rw.for_s / 60)) });
    setText("all-rework-text", t("screen.all_to_rework", {
      why: tOr("rework_why." + rw.why, rw.why.replace(/_/g, " ")), since,
    }));
  }

  const reasons = Object.entries(d.skipped_by_reason || {}).sort((a, b) => b[1] - a[1]);
  const sl = $("skip-list");
  sl.textContent = "";
  for (const [reason, n] of reasons) {
    const li = document.createElement("li");
    li.dataset.reason = reason;
    const a = document.createElement("span"); a.textContent = tOr("reason." + reason, reason.replace(/_/g, " "));
    const b = document.createElement("b"); b.textContent = num(n);
    li.append(a, b);
    sl.appendChild(li);
  }

  renderArms(d.arms || []);
  renderAlarms(d.alarms || []);

  const s = d.state;
  $("btn-start").disabled = !(s === "stopped" || s === "paused");
  $("btn-pause").disabled = !(s === "running" || s === "waiting_camera");
  $("btn-stop").disabled = !(s === "running" || s === "paused" || s === "starting" || s === "waiting_camera");
  // RESET also resets an arm in fault or e-stop, whatever the line's state.
  const armHeld = (d.arms || []).some((a) => a.state === "fault" || a.state === "estop");
  $("btn-reset").disabled = !(s === "estop" || s === "fault" || armHeld);

  if (d.frames !== undefined && String(d.frames) !== $("live").dataset.frame) requestFrame(d.frames);
  if (!$("engineer").hidden) { renderLatency(d); renderModelLoop(d); }
}

function renderArms(arms) {
  const box = $("arms");
  box.textContent = "";
  for (const a of arms) {
    const el = document.createElement("div");
    el.className = "arm";
    el.dataset.arm = a.name;
    const name = document.createElement("div"); name.className = "arm-name"; name.textContent = t("arm.name", { arm: a.name });
    const state = document.createElement("div");
    state.className = "arm-state " + a.state;
    const words = tOr("arm_state." + a.state, a.state);
    state.textContent = (a.connected || a.state === "disconnected") ? words : t("arm.no_link", { state: words });
    const line = document.createElement("div"); line.className = "arm-line";
    line.textContent = t("arm.line", {
      picks: num(a.picks), removed: num(a.uro_removed), busy: pct(a.utilisation || 0, 0),
    });
    el.append(name, state, line);
    box.appendChild(el);
  }
}

function alarmText(a) { return a.code ? tOr("alarm." + a.code, a.text, a.params) : a.text; }

// The raiser's own words (English, technical) under the sentence, where the language's sentence
// leaves them out: the operator reads the sentence, the engineer the detail.
function alarmDetail(a) {
  const tpl = a.code ? cat["alarm." + a.code] : undefined;
  const d = a.params && a.params.detail;
  return tpl !== undefined && d && !tpl.includes("{detail}") ? t("alarm.detail", { detail: d }) : "";
}

function sourceWords(src) {
  if (src.startsWith("arm:")) return t("source.arm", { arm: src.slice(4) });
  return tOr("source." + src, src);
}

const SEV = { critical: 0, warning: 1, info: 2 };

function renderAlarms(alarms) {
  const list = $("alarm-list");
  list.textContent = "";
  const sorted = alarms.slice().sort((a, b) =>
    (a.acked - b.acked) || (SEV[a.severity] - SEV[b.severity]) || (b.time - a.time));
  if (!sorted.length) {
    const li = document.createElement("li");
    li.className = "no-alarms";
    li.textContent = t("screen.no_alarms");
    list.appendChild(li);
  }
  for (const a of sorted.slice(0, 30)) {
    const li = document.createElement("li");
    li.className = "alarm " + a.severity + (a.acked ? " acked" : " unacked");
    li.dataset.alarm = a.id;
    const text = document.createElement("div"); text.className = "alarm-text";
    const main = document.createElement("div");
    main.textContent = t("alarm.row", { severity: "#severity." + a.severity, text: alarmText(a) });
    const meta = document.createElement("div"); meta.className = "alarm-meta";
    const parts = [clock(a.time), sourceWords(a.source)]
      .concat(a.active ? [] : [t("alarm.cleared")])
      .concat(a.acked ? [t("alarm.acked_by", { user: a.acked_by })] : []);
    parts.forEach((p, i) => {
      if (i) meta.appendChild(document.createTextNode(" · "));
      const span = document.createElement("span");
      span.textContent = p;
      meta.appendChild(span);
    });
    const detail = alarmDetail(a);
    if (detail) {
      const dd = document.createElement("div"); dd.className = "alarm-detail";
      dd.textContent = detail;
      text.append(main, dd, meta);
    } else {
      text.append(main, meta);
    }
    li.appendChild(text);
    if (!a.acked) {
      const b = document.createElement("button");
      b.type = "button"; b.className = "btn btn-ack"; b.textContent = t("screen.ack");
      b.addEventListener("click", () => ackAlarm(a.id));
      li.appendChild(b);
    }
    list.appendChild(li);
  }
  setText("n-alarms", num(alarms.filter((a) => !a.acked).length));

  const crit = sorted.find((a) => a.severity === "critical" && !a.acked);
  const banner = $("critical-banner");
  if (crit) {
    setText("critical-text", t("alarm.banner", { text: alarmText(crit) }));
    banner.dataset.alarm = crit.id;
    banner.hidden = false;
    document.body.classList.add("critical");
  } else {
    banner.hidden = true;
    document.body.classList.remove("critical");
  }
}

// ------------------------------------------------------------------ camera view

function requestFrame(n) {
  wantFrame = n;
  if (!frameBusy) nextFrame();
}

async function nextFrame() {
  if (wantFrame === null) return;
  const n = wantFrame;
  wantFrame = null;
  frameBusy = true;
  try {
    const r = await fetch("/api/frame.jpg?n=" + n, { cache: "no-store", credentials: "same-origin" });
    if (r.ok) {
      const url = URL.createObjectURL(await r.blob());
      const img = $("live");
      await new Promise((resolve) => {
        img.onload = resolve;
        img.onerror = resolve;
        img.src = url;
      });
      if (frameUrl) URL.revokeObjectURL(frameUrl);
      frameUrl = url;
      img.dataset.frame = String(n);
      $("no-frame").hidden = true;
    } else if (r.status === 404 || r.status === 401 || r.status === 403) {
      // No frame yet, or not for this screen without a login: ask again when the frame counter moves.
      $("live").dataset.frame = String(n);
      $("no-frame").dataset.i18n = r.status === 404 ? "screen.no_frame" : "screen.frame_login";
      $("no-frame").textContent = t($("no-frame").dataset.i18n);
      $("no-frame").hidden = false;
    }
  } catch (e) {
    /* the next state event asks again */
  } finally {
    frameBusy = false;
  }
  if (wantFrame !== null) nextFrame();
}

// ------------------------------------------------------------------ live events

let events = null;
let downSince = null;

function connect() {
  events = new EventSource("/api/events");
  events.addEventListener("state", (ev) => {
    downSince = null;
    $("conn-lost").hidden = true;
    render(JSON.parse(ev.data));
  });
  events.addEventListener("open", () => { downSince = null; $("conn-lost").hidden = true; });
}

setInterval(() => {
  if (!events || events.readyState === EventSource.OPEN) { downSince = null; return; }
  if (downSince === null) downSince = Date.now();
  // EventSource reconnects by itself; only say so when it has been down a moment.
  if (Date.now() - downSince > 2000) $("conn-lost").hidden = false;
}, 500);

// ------------------------------------------------------------------ wiring

function wire() {
  $("btn-start").addEventListener("click", () => control("start"));
  $("btn-pause").addEventListener("click", () => control("pause"));
  $("btn-stop").addEventListener("click", () => control("stop"));
  $("btn-reset").addEventListener("click", () => control("reset"));
  $("estop").addEventListener("click", estop);
  $("login-btn").addEventListener("click", loginButton);
  $("lang-btn").addEventListener("click", () => {
    const next = LANGS[(LANGS.indexOf(lang) + 1) % LANGS.length];
    // This panel keeps its choice; the others keep theirs (or the line's [ui] language).
    try { localStorage.setItem("scallop.lang", next); } catch (e) { /* private mode: not remembered */ }
    setLanguage(next).catch((e) => toast(errorWords(e), true));
  });
  $("recipe-btn").addEventListener("click", openRecipes);
  $("lot-btn").addEventListener("click", openLot);
  $("lot-cancel").addEventListener("click", () => { $("lot").hidden = true; });
  $("lot-ok").addEventListener("click", setLot);
  $("lot-input").addEventListener("keydown", (ev) => { if (ev.key === "Enter") setLot(); });
  $("check-override").addEventListener("click", overrideCheck);
  $("recipes-close").addEventListener("click", () => { $("recipes").hidden = true; });
  $("btn-engineer").addEventListener("click", openEngineer);
  $("engineer-close").addEventListener("click", closeEngineer);
  $("config-apply").addEventListener("click", applyConfig);
  $("capture-toggle").addEventListener("click", toggleCapture);
  $("critical-ack").addEventListener("click", () => {
    const id = $("critical-banner").dataset.alarm;
    if (id !== undefined) ackAlarm(id);
  });
  for (const k of document.querySelectorAll("#pin-keys .key")) {
    k.addEventListener("click", () => pinKey(k.dataset.key));
  }
  $("pin-ok").addEventListener("click", pinOk);
  $("pin-cancel").addEventListener("click", () => { $("pinpad").hidden = true; pinThen = null; pinValue = ""; });
  document.addEventListener("keydown", (ev) => {
    if ($("pinpad").hidden) return;
    if (/^[0-9]$/.test(ev.key)) pinKey(ev.key);
    else if (ev.key === "Backspace") pinKey("back");
    else if (ev.key === "Enter") pinOk();
    else if (ev.key === "Escape") $("pin-cancel").click();
  });
}

async function init() {
  wire();
  let saved = null;
  try { saved = localStorage.getItem("scallop.lang"); } catch (e) { saved = null; }
  try {
    // The panel's own choice, else the line's [ui] language (the server writes it into <html lang>).
    await setLanguage(saved || document.documentElement.lang);
  } catch (e) {
    toast("i18n: " + e.message, true);
  }
  try {
    const d = await api("GET", "/api/state");
    setSession(d.session);
    render(d);
  } catch (e) {
    toast(t("toast.unreachable", { error: errorWords(e) }), true);
  }
  connect();
  document.body.dataset.ready = "1";
}

init();
