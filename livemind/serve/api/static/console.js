// livemind console: live rooms (server-sent events), recommendations side by side, the host's
// streamed answers. Plain browser JavaScript, no dependencies; it calls the public API only.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { rooms: [], selected: null, viewer: null, timer: null, asking: false };

function fmtMs(x) { return x === null || x === undefined ? "–" : `${Math.round(x)} ms`; }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

// ---------------------------------------------------------------- the API key
// With LIVEMIND_API_KEY set, the service answers 401 to calls without it: the console asks once,
// keeps the key for this tab (sessionStorage) and sends it as a bearer token.
let asked = null;

async function api(path, options = {}) {
  const call = () => {
    const key = sessionStorage.getItem("livemind-key");
    const headers = { ...(options.headers || {}), ...(key ? { Authorization: `Bearer ${key}` } : {}) };
    return fetch(path, { ...options, headers });
  };
  let r = await call();
  if (r.status === 401) {
    asked = asked || new Promise((resolve) => {
      const key = window.prompt("This livemind service needs its API key (LIVEMIND_API_KEY):");
      if (key) sessionStorage.setItem("livemind-key", key.trim());
      resolve();
    });
    await asked;
    r = await call();
    if (r.status === 401) asked = null;  // a wrong key: ask again on the next call
  }
  return r;
}

// server-sent events of a fetch response, parsed, as they arrive (EventSource cannot send the key)
async function* sseData(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (line.startsWith("data: ")) yield JSON.parse(line.slice(6));
    }
  }
}

// ---------------------------------------------------------------- the live stream, reconnecting
async function connect() {
  for (;;) {
    try {
      const r = await api("/v1/console/stream");
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      $("s-conn").textContent = "live"; $("s-conn").className = "on";
      for await (const frame of sseData(r)) {
        renderStrip(frame.stats);
        renderRooms(frame.rooms);
      }
    } catch (err) {
      // fall through: reconnect
    }
    $("s-conn").textContent = "reconnecting"; $("s-conn").className = "off";
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function renderStrip(s) {
  $("s-rooms").textContent = s.live_rooms;
  $("s-events").textContent = s.events_per_s.toFixed(1);
  $("s-rec").textContent = `${fmtMs(s.recommend_p50_ms)} / ${fmtMs(s.recommend_p99_ms)}`;
  $("s-host").textContent = s.host ? `${fmtMs(s.host_p50_ms)} / ${fmtMs(s.host_p99_ms)}` : "no host";
  $("s-batch").textContent = s.host ? `${s.host_running} / ${s.host_waiting}` : "–";
}

function productLabel(product, name) {
  if (name) return name;
  if (product === null || product === undefined || product < 0) return "chatting, no product on the card";
  return `product ${product}`;
}

function roomLabel(r) { return `room ${r.room} · ${productLabel(r.product, r.product_name)}`; }

function renderRooms(rooms) {
  state.rooms = rooms;
  $("rooms-count").textContent = `(${rooms.length})`;
  const list = $("rooms");
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.room : null;
  list.replaceChildren(...rooms.map((r) => {
    const button = el("button", { class: "room", type: "button", "data-room": String(r.room),
                                  "aria-pressed": String(state.selected === r.room) },
      el("div", { class: "title" }, `room ${r.room}`),
      el("div", { class: "meta" }, `streamer ${r.streamer} · viewers now: ${r.audience ?? 0}`),
      el("div", { class: "product" }, productLabel(r.product, r.product_name)),
      el("div", { class: "sid" }, r.sid ? `SID ${r.sid.join("-")}` : "no SID"));
    button.addEventListener("click", () => selectRoom(r.room));
    return el("li", {}, button);
  }));
  if (focused) { const again = list.querySelector(`[data-room="${focused}"]`); if (again) again.focus(); }
  const select = $("ask-room");
  const keep = select.value;
  select.replaceChildren(...rooms.map((r) => el("option", { value: String(r.room) }, roomLabel(r))));
  if (state.selected !== null && rooms.some((r) => r.room === state.selected)) select.value = String(state.selected);
  else if (rooms.some((r) => String(r.room) === keep)) select.value = keep;
}

function selectRoom(room) {
  state.selected = room;
  $("ask-room").value = String(room);
  for (const b of document.querySelectorAll(".room")) b.setAttribute("aria-pressed", String(Number(b.dataset.room) === room));
  $("question").focus();
}

// ---------------------------------------------------------------- recommendations
async function recommend(policy, viewer) {
  const r = await api("/v1/recommend", { method: "POST", headers: { "Content-Type": "application/json" },
                                            body: JSON.stringify({ viewer, k: 10, policy }) });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

function renderRecs(target, answer) {
  const names = new Map(state.rooms.map((r) => [r.room, r.product_name]));
  $(target).replaceChildren(...answer.rooms.map((x) => el("li", {},
    `room ${x.room} `, el("span", { class: "score" }, `(${x.score.toFixed(3)})`),
    ` · ${productLabel(x.product, names.get(x.room))}`)));
}

async function refreshRecs() {
  if (state.viewer === null) return;
  const viewer = state.viewer;
  const started = performance.now();
  try {
    const [one, pop] = await Promise.all([recommend("onelive", viewer), recommend("popularity", viewer)]);
    if (viewer !== state.viewer) return;
    renderRecs("recs-onelive", one);
    renderRecs("recs-popularity", pop);
    $("recs-status").textContent = `viewer ${viewer}${one.cold_start ? " (no history yet)" : ""}: both lists in `
      + `${Math.round(performance.now() - started)} ms; refreshed every 2 s.`;
    $("recs-status").classList.remove("error");
  } catch (err) {
    $("recs-status").textContent = String(err.message || err);
    $("recs-status").classList.add("error");
  }
}

$("viewer-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.viewer = Number($("viewer").value);
  clearInterval(state.timer);
  refreshRecs();
  state.timer = setInterval(refreshRecs, 2000);
});

// ---------------------------------------------------------------- the host
async function ask(room, viewer, question) {
  const chat = $("chat");
  chat.append(el("div", { class: "msg q" }, `viewer ${viewer} in room ${room}: ${question}`));
  const answer = el("div", { class: "answer" });
  const timing = el("div", { class: "timing" }, "waiting for the first token…");
  const box = el("div", { class: "msg a" }, answer, timing);
  chat.append(box);
  chat.scrollTop = chat.scrollHeight;
  const started = performance.now();
  let first = null;
  const r = await api("/v1/host/ask", { method: "POST", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify({ room, viewer, question, stream: true }) });
  if (!r.ok) {
    const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
    answer.textContent = body.error || `HTTP ${r.status}`;
    answer.classList.add("error");
    timing.textContent = `${r.status} after ${Math.round(performance.now() - started)} ms`;
    return;
  }
  let text = "";
  for await (const event of sseData(r)) {
    if (event.delta !== undefined) {
      if (first === null) first = performance.now() - started;
      text += event.delta;
      answer.textContent = text;
      timing.textContent = `first token ${Math.round(first)} ms · streaming…`;
    } else if (event.done) {
      answer.replaceChildren();
      if (event.reasoning) answer.append(el("div", { class: "reasoning" }, event.reasoning));
      answer.append(el("div", {}, event.answer));
      const t = event.timings;
      timing.textContent = `first token ${fmtMs(t.ttft_ms)} · answer ${fmtMs(t.answer_ms)} · total ${fmtMs(t.total_ms)}`
        + ` · ${event.usage.completion_tokens} tokens (${event.usage.cached_prompt_tokens} of ${event.usage.prompt_tokens}`
        + " prompt tokens from the card cache)";
    }
    chat.scrollTop = chat.scrollHeight;
  }
}

$("ask-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (state.asking) return;
  const question = $("question").value.trim();
  if (!question || !$("ask-room").value) return;
  state.asking = true;
  $("ask-button").disabled = true;
  try {
    await ask(Number($("ask-room").value), Number($("ask-viewer").value), question);
    $("question").value = "";
  } catch (err) {
    $("chat").append(el("div", { class: "msg error" }, String(err.message || err)));
  } finally {
    state.asking = false;
    $("ask-button").disabled = false;
  }
});

connect();
