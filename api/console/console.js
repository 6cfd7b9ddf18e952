// gatewatch guard console: the alert list kept live by the service's event stream, plus history,
// cameras, gates and recent access decisions. Same-origin fetches with the session cookie; every
// request that changes something carries the session's CSRF token.
"use strict";

const API = "/api/v1";
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const alerts = new Map(); // id -> AlertOut, every alert not yet resolved
const fromStream = new Set(); // ids the stream has told us about (newer than any list)
let audio = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, options) {
  const init = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
  if (init.body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(init.body);
  }
  if (init.method && init.method !== "GET") init.headers["X-CSRF-Token"] = CSRF;
  const response = await fetch(API + path, init);
  if (response.status === 401) {
    window.location.assign("/console"); // session gone: back to the login form
    throw new Error("logged out");
  }
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const error = new Error((body && (body.detail || body.title)) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

function toast(text) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

function time(text) {
  if (!text) return "";
  const d = new Date(text);
  return isNaN(d) ? text : d.toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
}

function beep() {
  try {
    audio = audio || new (window.AudioContext || window.webkitAudioContext)();
    if (audio.state === "suspended") audio.resume();
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = "square";
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.15, audio.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.0001, audio.currentTime + 0.6);
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.6);
  } catch (e) { /* no audio on this screen */ }
}
// Browsers start audio only after a gesture on the page: the first click anywhere unlocks it.
document.addEventListener("click", () => {
  try {
    audio = audio || new (window.AudioContext || window.webkitAudioContext)();
    if (audio.state === "suspended") audio.resume();
  } catch (e) { /* no audio on this screen */ }
}, { once: true });

function evidence(alert) {
  const ev = alert.evidence || {};
  const pictures = [];
  const pic = (url, label, cls) => pictures.push(el("figure", { class: "evidence " + cls },
    el("a", { href: url, target: "_blank", rel: "noopener" },
      el("img", { src: url, alt: label, class: cls + "-img" })),
    el("figcaption", {}, label)));
  if (ev.trajectory_url) pic(ev.trajectory_url, "trajectory", "trajectory");
  if (ev.image_url) pic(ev.image_url, "snapshot", "snapshot");
  if (ev.crop_url) pic(ev.crop_url, "face", "crop");
  if (ev.clip_url) pictures.push(el("a", { class: "clip", href: ev.clip_url, target: "_blank", rel: "noopener" }, "▶ clip"));
  return pictures.length ? el("div", { class: "evidence-row" }, pictures) : null;
}

function card(alert) {
  const note = el("input", { class: "note", type: "text", maxlength: "2000", placeholder: "note",
                             "aria-label": "note", "data-alert": alert.id });
  const act = async (step) => {
    const text = note.value.trim();
    if (step === "resolve" && !text) { note.focus(); toast("Resolving needs a note of what was done"); return; }
    try {
      const body = step === "resolve" ? { note: text } : (text ? { note: text } : {});
      const changed = await api(`/alerts/${alert.id}/${step}`, { method: "POST", body });
      const current = document.querySelector(`input.note[data-alert="${alert.id}"]`);
      if (current) current.value = ""; // the note went with this step
      upsert(changed);
    } catch (e) { toast(`#${alert.id}: ${e.message}`); }
  };
  const who = alert.acked_by ? `acknowledged by ${alert.acked_by.label || "key " + alert.acked_by.key_id}` : null;
  return el("li", { id: `alert-${alert.id}`, class: `alert sev-${alert.severity} status-${alert.status}`
                     + (alert.overdue ? " overdue" : ""), "data-id": alert.id, "data-kind": alert.kind },
    el("div", { class: "alert-head" },
      el("span", { class: "severity" }, alert.severity),
      el("span", { class: "kind" }, alert.kind.replace(/_/g, " ")),
      alert.count > 1 ? el("span", { class: "repeat" }, `×${alert.count}`) : null,
      el("span", { class: "status" }, alert.status),
      alert.overdue ? el("span", { class: "overdue-tag" }, "OVERDUE") : null),
    el("p", { class: "message" }, alert.message),
    el("p", { class: "meta" }, `${alert.source.type} ${alert.source.id} · first ${time(alert.first_at)} · last `
      + time(alert.last_at), who ? ` · ${who}` : "", alert.ack_note ? ` · “${alert.ack_note}”` : ""),
    evidence(alert),
    el("div", { class: "actions" }, note,
      alert.status === "new" ? el("button", { class: "ack", type: "button", onclick: () => act("ack") }, "Acknowledge") : null,
      el("button", { class: "resolve", type: "button", onclick: () => act("resolve") }, "Resolve")));
}

const SEVERITY_ORDER = { critical: 0, high: 1, medium: 2, low: 3 };

function render() {
  const list = document.getElementById("alerts");
  const open = [...alerts.values()].sort((a, b) =>
    (a.status === "new" ? 0 : 1) - (b.status === "new" ? 0 : 1)
    || SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity] || b.id - a.id);
  // keep what a guard is typing in a note across re-renders
  const typed = new Map([...list.querySelectorAll("input.note")].map((i) => [i.dataset.alert, i.value]));
  const focused = document.activeElement?.classList.contains("note") ? document.activeElement.dataset.alert : null;
  const fresh = new Set([...list.querySelectorAll("li.fresh")].map((li) => li.dataset.id));
  list.replaceChildren(...open.map((alert) => {
    const node = card(alert);
    const input = node.querySelector("input.note");
    if (typed.has(String(alert.id))) input.value = typed.get(String(alert.id));
    if (fresh.has(String(alert.id))) node.classList.add("fresh");
    return node;
  }));
  if (focused) list.querySelector(`input.note[data-alert="${focused}"]`)?.focus();
  document.getElementById("open-count").textContent = open.length;
  document.getElementById("no-alerts").hidden = open.length > 0;
}

function upsert(alert, isNew) {
  if (alert.status === "resolved") alerts.delete(alert.id);
  else alerts.set(alert.id, alert);
  render();
  if (isNew && alert.severity === "critical") {
    const node = document.getElementById(`alert-${alert.id}`);
    if (node) {
      node.classList.add("fresh");
      setTimeout(() => document.getElementById(`alert-${alert.id}`)?.classList.remove("fresh"), 30000);
    }
    beep();
  }
  loadHistory();
}

async function loadOpen() {
  for (const status of ["new", "acknowledged"]) {
    const page = await api(`/alerts?status=${status}&limit=500`);
    for (const alert of page.alerts) if (!fromStream.has(alert.id)) alerts.set(alert.id, alert);
  }
  render();
}

function stream() {
  const live = document.getElementById("live");
  const source = new EventSource(`${API}/alerts/stream`, { withCredentials: true });
  let loaded = false;
  source.onopen = () => {
    live.textContent = "live";
    live.className = "live on";
    if (!loaded) { loaded = true; loadOpen().catch((e) => toast(e.message)); }
  };
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
  for (const type of ["created", "updated", "acknowledged", "resolved"]) {
    source.addEventListener(type, (event) => {
      const alert = JSON.parse(event.data);
      fromStream.add(alert.id);
      upsert(alert, type === "created");
    });
  }
}

let historyTimer = null;
function loadHistory() {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(async () => {
    const params = new URLSearchParams({ limit: "50" });
    const status = document.getElementById("filter-status").value;
    const kind = document.getElementById("filter-kind").value.trim();
    if (status) params.set("status", status);
    if (kind) params.set("kind", kind);
    try {
      const page = await api(`/alerts?${params}`);
      const actor = (a) => a ? (a.label || `key ${a.key_id}`) : "";
      document.getElementById("history").replaceChildren(...page.alerts.map((a) =>
        el("tr", { class: `sev-${a.severity}`, "data-id": a.id },
          el("td", {}, a.id), el("td", {}, time(a.last_at)), el("td", { class: "severity" }, a.severity),
          el("td", {}, a.kind), el("td", {}, a.message), el("td", {}, a.status),
          el("td", {}, actor(a.resolved_by) || actor(a.acked_by)), el("td", {}, a.resolve_note || a.ack_note || ""))));
    } catch (e) { toast(`history: ${e.message}`); }
  }, 150);
}

async function loadCameras() {
  const list = document.getElementById("cameras");
  try {
    const cameras = await api("/cameras");
    list.replaceChildren(...(cameras.length ? cameras.map((c) => {
      const s = c.status || {};
      const state = s.online === true ? "online" : s.online === false ? "offline" : "starting";
      return el("li", { class: `cam ${state}`, "data-id": c.id },
        el("span", { class: "dot" }), el("span", { class: "name" }, c.id),
        el("span", { class: "detail" }, `${c.role}${c.gate_id ? " · gate " + c.gate_id : ""} · ${state}`
          + (s.online ? ` · ${s.fps.toFixed(1)} fps` : "")));
    }) : [el("li", { class: "empty" }, "no cameras")]));
  } catch (e) {
    list.replaceChildren(el("li", { class: "empty" }, e.status === 403 ? "camera list needs an admin key" : e.message));
  }
}

async function loadGates() {
  const list = document.getElementById("gates");
  try {
    const gates = await api("/gates");
    list.replaceChildren(...(gates.length ? gates.map((g) => el("li", { class: "gate", "data-id": g.id },
      el("span", { class: "name" }, g.name), el("span", { class: "detail" },
        `${g.kind}${g.building ? " · " + g.building : ""}`))) : [el("li", { class: "empty" }, "no gates")]));
  } catch (e) {
    list.replaceChildren(el("li", { class: "empty" }, e.status === 403 ? "gate list needs an admin key" : e.message));
  }
}

async function loadEvents() {
  const list = document.getElementById("events");
  try {
    const page = await api("/events?limit=12");
    list.replaceChildren(...(page.events.length ? page.events.map((e) => el("li",
      { class: `event ${e.decision}`, "data-id": e.id },
      e.crop_url ? el("img", { src: e.crop_url, alt: "face", class: "crop-img" })
                 : el("span", { class: "no-crop" }, "—"),
      el("span", { class: "decision" }, e.decision),
      el("span", { class: "detail" }, `${e.resident_name || e.reason} · gate ${e.gate_id} · ${time(e.at)}`)))
      : [el("li", { class: "empty" }, "no access decisions yet")]));
  } catch (e) { list.replaceChildren(el("li", { class: "empty" }, e.message)); }
}

function tick() { document.getElementById("clock").textContent = new Date().toLocaleTimeString(); }

document.getElementById("history-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  loadHistory();
});
stream();
loadHistory();
loadCameras();
loadGates();
loadEvents();
tick();
setInterval(tick, 1000);
setInterval(loadCameras, 10000);
setInterval(loadEvents, 15000);
