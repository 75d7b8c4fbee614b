// Operator screen. Plain JS, no build step: the line's state arrives as server-sent events
// (/api/events); the camera view is refetched whenever the frame counter moves, one fetch at
// a time, so a slow network shows older frames instead of a growing backlog.
"use strict";

const $ = (id) => document.getElementById(id);
const NEEDS = { start: "operator", pause: "operator", stop: "operator", reset: "operator" };

let session = null;          // {user, role} or null
let lastState = null;
let wantFrame = null;        // newest frame number not yet fetched
let frameBusy = false;
let frameUrl = null;
let pinThen = null;          // what to do after a successful login
let pinValue = "";
let toastTimer = null;

// ------------------------------------------------------------------ API

async function api(method, path, body) {
  const opt = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    opt.headers["Content-Type"] = "application/json";
    opt.body = JSON.stringify(body);
  }
  const r = await fetch(path, opt);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const err = new Error((data && data.error) || r.statusText || ("HTTP " + r.status));
    err.status = r.status;
    throw err;
  }
  return data;
}

function toast(text, isError) {
  const t = $("toast");
  t.textContent = text;
  t.className = isError ? "error" : "";
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, isError ? 6000 : 3000);
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
    } else if (e.status === 403) {
      toast(e.message, true);
      askPin("ENTER " + role.toUpperCase() + " PIN", () => withLogin(role, title, fn));
    } else {
      toast(e.message, true);
    }
  }
}

// ------------------------------------------------------------------ login

function setSession(s) {
  session = s;
  $("user-name").textContent = s ? (s.user + " (" + s.role + ")") : "not logged in";
  $("login-btn").textContent = s ? "LOG OUT" : "LOG IN";
}

function askPin(title, then) {
  pinThen = then || null;
  pinValue = "";
  $("pin-title").textContent = title || "ENTER PIN";
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
    toast("Logged in: " + r.user + " (" + r.role + ")");
    const then = pinThen;
    pinThen = null;
    if (then) then();
  } catch (e) {
    toast(e.message, true);
  }
}

async function loginButton() {
  if (!session) { askPin("ENTER PIN", null); return; }
  try { await api("POST", "/api/logout"); } catch (e) { /* logged out either way */ }
  setSession(null);
  toast("Logged out");
}

// ------------------------------------------------------------------ control

function control(action) {
  withLogin(NEEDS[action], "PIN TO " + action.toUpperCase(), async () => {
    const r = await api("POST", "/api/" + action);
    toast(action.toUpperCase() + ": line is " + r.state);
  });
}

async function estop() {
  // Never waits for a login: the server accepts e-stop from anyone at the screen.
  try {
    const r = await api("POST", "/api/estop");
    toast("E-STOP: line is " + r.state, true);
  } catch (e) {
    toast("E-STOP FAILED: " + e.message + ". Use the hardware e-stop!", true);
  }
}

function ackAlarm(id) {
  withLogin("operator", "PIN TO ACKNOWLEDGE", async () => {
    await api("POST", "/api/alarms/" + id + "/ack");
    toast("Alarm acknowledged");
  });
}

// ------------------------------------------------------------------ recipes

async function openRecipes() {
  let data;
  try { data = await api("GET", "/api/recipes"); } catch (e) { toast(e.message, true); return; }
  const list = $("recipe-list");
  list.textContent = "";
  for (const r of data.recipes) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "btn btn-plain" + (r.name === data.current ? " current" : "");
    b.dataset.recipe = r.name;
    b.textContent = r.name;
    const d = document.createElement("span");
    d.className = "recipe-desc";
    d.textContent = r.product_size_mm[0] + "–" + r.product_size_mm[1] + " mm, belt " + r.belt_speed_mm_s +
      " mm/s" + (r.description ? " · " + r.description : "");
    b.appendChild(d);
    b.addEventListener("click", () => chooseRecipe(r.name));
    list.appendChild(b);
  }
  $("recipes").hidden = false;
}

function chooseRecipe(name) {
  withLogin("operator", "PIN TO CHANGE RECIPE", async () => {
    await api("POST", "/api/recipe", { name });
    $("recipes").hidden = true;
    toast("Recipe: " + name);
  });
}

// ------------------------------------------------------------------ engineer

function openEngineer() {
  withLogin("engineer", "ENTER ENGINEER PIN", async () => {
    const cfg = await api("GET", "/api/config");
    $("config-view").textContent = JSON.stringify(cfg, null, 2);
    renderLatency(lastState);
    $("engineer").hidden = false;
  });
}

function applyConfig() {
  let changes;
  try { changes = JSON.parse($("config-changes").value); } catch (e) {
    toast("Changes are not valid JSON: " + e.message, true);
    return;
  }
  withLogin("engineer", "ENTER ENGINEER PIN", async () => {
    const r = await api("POST", "/api/config", { changes });
    $("config-view").textContent = JSON.stringify(r.config, null, 2);
    toast("Configuration changed");
  });
}

function renderLatency(d) {
  if (!d) return;
  const parts = Object.entries(d.latency_ms || {}).map(([stage, q]) =>
    stage + " " + fmt(q.p50, 1) + " / " + fmt(q.p99, 1) + " ms");
  $("latency").textContent = "latency p50 / p99: " + (parts.join(" · ") || "–") +
    " · frames " + d.frames + ", dropped " + d.frames_dropped;
}

// ------------------------------------------------------------------ rendering

function fmt(v, digits) { return (v === null || v === undefined) ? "–" : Number(v).toFixed(digits); }

function setText(id, text) {
  const el = $(id);
  if (el.textContent !== String(text)) el.textContent = text;
}

function render(d) {
  if (d.error) { toast(d.error, true); return; }
  lastState = d;
  const st = $("state");
  st.textContent = d.state === "waiting_camera" ? "waiting for camera" : d.state;
  st.className = "state state-" + d.state;
  setText("recipe-name", d.recipe || "—");
  setText("n-per-minute", fmt(d.per_minute, 1));
  setText("n-removal", d.removal_rate === null ? "–" : (d.removal_rate * 100).toFixed(1) + "%");
  setText("n-seen", d.seen);
  setText("n-picked", d.picked);
  setText("n-missed", d.missed);
  setText("n-adductor", d.adductor_hits);
  setText("n-skipped", d.skipped);

  const reasons = Object.entries(d.skipped_by_reason || {}).sort((a, b) => b[1] - a[1]);
  const sl = $("skip-list");
  sl.textContent = "";
  for (const [reason, n] of reasons) {
    const li = document.createElement("li");
    li.dataset.reason = reason;
    const a = document.createElement("span"); a.textContent = reason.replace(/_/g, " ");
    const b = document.createElement("b"); b.textContent = n;
    li.append(a, b);
    sl.appendChild(li);
  }

  renderArms(d.arms || []);
  renderAlarms(d.alarms || []);

  const s = d.state;
  $("btn-start").disabled = !(s === "stopped" || s === "paused");
  $("btn-pause").disabled = !(s === "running" || s === "waiting_camera");
  $("btn-stop").disabled = !(s === "running" || s === "paused" || s === "starting" || s === "waiting_camera");
  $("btn-reset").disabled = !(s === "estop" || s === "fault");

  if (d.frames !== undefined && String(d.frames) !== $("live").dataset.frame) requestFrame(d.frames);
  if (!$("engineer").hidden) renderLatency(d);
}

function renderArms(arms) {
  const box = $("arms");
  box.textContent = "";
  for (const a of arms) {
    const el = document.createElement("div");
    el.className = "arm";
    el.dataset.arm = a.name;
    const name = document.createElement("div"); name.className = "arm-name"; name.textContent = "ARM " + a.name;
    const state = document.createElement("div");
    state.className = "arm-state " + a.state;
    state.textContent = (a.connected || a.state === "disconnected") ? a.state : a.state + " · no link";
    const line = document.createElement("div"); line.className = "arm-line";
    line.innerHTML = "picks <b></b> · uro off <b></b> · busy <b></b>";
    const b = line.querySelectorAll("b");
    b[0].textContent = a.picks;
    b[1].textContent = a.uro_removed;
    b[2].textContent = Math.round((a.utilisation || 0) * 100) + "%";
    if (a.last_result) line.title = "last: " + a.last_result;
    el.append(name, state, line);
    box.appendChild(el);
  }
}

const SEV = { critical: 0, warning: 1, info: 2 };

function renderAlarms(alarms) {
  const list = $("alarm-list");
  list.textContent = "";
  const sorted = alarms.slice().sort((a, b) =>
    (a.acked - b.acked) || (SEV[a.severity] - SEV[b.severity]) || (b.time - a.time));
  let unacked = 0;
  for (const a of sorted.slice(0, 30)) {
    if (!a.acked) unacked++;
    const li = document.createElement("li");
    li.className = "alarm " + a.severity + (a.acked ? " acked" : " unacked");
    li.dataset.alarm = a.id;
    const text = document.createElement("div"); text.className = "alarm-text";
    const main = document.createElement("div"); main.textContent = a.severity.toUpperCase() + ": " + a.text;
    const meta = document.createElement("div"); meta.className = "alarm-meta";
    meta.textContent = new Date(a.time * 1000).toLocaleTimeString() + " · " + a.source +
      (a.active ? "" : " · cleared") + (a.acked ? " · acknowledged by " + a.acked_by : "");
    text.append(main, meta);
    li.appendChild(text);
    if (!a.acked) {
      const b = document.createElement("button");
      b.type = "button"; b.className = "btn btn-ack"; b.textContent = "ACK";
      b.addEventListener("click", () => ackAlarm(a.id));
      li.appendChild(b);
    }
    list.appendChild(li);
  }
  setText("n-alarms", alarms.filter((a) => !a.acked).length);

  const crit = sorted.find((a) => a.severity === "critical" && !a.acked);
  const banner = $("critical-banner");
  if (crit) {
    setText("critical-text", "ALARM: " + crit.text);
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
    const r = await fetch("/api/frame.jpg?n=" + n, { cache: "no-store" });
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
    } else if (r.status === 404) {
      // No frame yet: ask again when the frame counter moves, not on every event.
      $("live").dataset.frame = String(n);
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
  $("recipe-btn").addEventListener("click", openRecipes);
  $("recipes-close").addEventListener("click", () => { $("recipes").hidden = true; });
  $("btn-engineer").addEventListener("click", openEngineer);
  $("engineer-close").addEventListener("click", () => { $("engineer").hidden = true; });
  $("config-apply").addEventListener("click", applyConfig);
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
  try {
    const d = await api("GET", "/api/state");
    setSession(d.session);
    render(d);
  } catch (e) {
    toast("Cannot reach the line: " + e.message, true);
  }
  connect();
}

init();
