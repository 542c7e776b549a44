// lipsyncd console: plain JavaScript, no framework. It changes things only through the
// documented API, with the session cookie and the console header (CSRF protection).
"use strict";
const HEADER = {"X-Lipsyncd-Console": "1"};
const FINAL = ["done", "failed", "expired"];
// the page's words in its language (daemon/api/console/words.py), filled in by the server
const MESSAGES = JSON.parse((document.getElementById("messages") || {}).textContent || "{}");
function t(key, values) {
  const text = MESSAGES[key] || key;
  return text.replace(/\{(\w+)\}/g, (all, k) => (values && k in values ? String(values[k]) : all));
}
const stateName = state => (MESSAGES.states || {})[state] || state;

async function api(method, url, body) {
  const r = await fetch(url, {method, body, headers: HEADER, credentials: "same-origin"});
  let data = null;
  try { data = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) throw new Error((data && data.error && data.error.message) || t("http_error", {status: r.status}));
  return data;
}

function setRow(el, doc) {
  const state = el.querySelector('[data-field="state"]');
  if (state) { state.textContent = stateName(doc.state); state.className = `state s-${doc.state}`; }
  const bar = el.querySelector('[data-field="progress"]');
  if (bar) bar.value = doc.progress != null ? doc.progress : (doc.state === "done" ? 1 : 0);
  const pct = el.querySelector('[data-field="percent"]');
  if (pct && doc.progress != null) pct.textContent = `${Math.round(doc.progress * 100)}%`;
  el.dataset.state = doc.state;
}

// The job list: one stream for every unfinished job on the page.
function liveList() {
  const rows = [...document.querySelectorAll("tr[data-active]")];
  if (!rows.length) return;
  const q = rows.map(r => "name=" + encodeURIComponent(r.dataset.job)).join("&");
  const es = new EventSource(`/api/v1/events?${q}`);
  es.addEventListener("job", ev => {
    const doc = JSON.parse(ev.data);
    const row = rows.find(r => r.dataset.job === doc.job);
    if (row) setRow(row, doc);
    if (FINAL.includes(doc.state)) health();
  });
  es.onerror = () => { if (rows.every(r => FINAL.includes(r.dataset.state))) es.close(); };
}

// One job: follow it, and when it finishes swap in its outputs (no reload).
function liveJob() {
  const box = document.getElementById("job");
  if (!box) return;
  const name = box.dataset.job;
  const message = box.querySelector('[data-field="message"]');
  if (!FINAL.includes(box.dataset.state)) {
    const es = new EventSource(`/api/v1/jobs/${encodeURIComponent(name)}/events`);
    es.addEventListener("job", async ev => {
      const doc = JSON.parse(ev.data);
      setRow(box, doc);
      if (FINAL.includes(doc.state)) {
        es.close();
        const r = await fetch(`/jobs/${encodeURIComponent(name)}/outputs`, {credentials: "same-origin"});
        if (r.ok) document.getElementById("outputs").innerHTML = await r.text();
        box.querySelectorAll("[data-action]").forEach(b => {
          b.hidden = !((b.dataset.action === "retry" && doc.state === "failed") ||
                       (b.dataset.action === "delete" && doc.state === "done"));
        });
        // buttons that change things only for a session that may change things
        if (box.dataset.canWrite === "1") {
          if (doc.state === "failed" && !box.querySelector('[data-action="retry"]')) addButton(box, "retry", t("retry"));
          if (doc.state === "done" && !box.querySelector('[data-action="delete"]')) addButton(box, "delete", t("delete"));
        }
        health();
      }
    });
  }
  box.addEventListener("click", async ev => {
    const action = ev.target.dataset && ev.target.dataset.action;
    if (!action) return;
    const url = `/api/v1/jobs/${encodeURIComponent(name)}`;
    if ((action === "delete" || action === "cancel") &&
        !confirm(action === "delete" ? t("confirm_delete") : t("confirm_cancel"))) return;
    ev.target.disabled = true;
    try {
      const r = action === "retry" ? await api("POST", `${url}/retry`) : await api("DELETE", url);
      message.textContent = action === "retry" ? t("retried") : ((MESSAGES.actions || {})[r.action] || r.action || "");
      setTimeout(() => location.reload(), 800);
    } catch (e) { message.textContent = e.message; ev.target.disabled = false; }
  });
}

function addButton(box, action, label) {
  const b = document.createElement("button");
  b.type = "button"; b.dataset.action = action; b.textContent = label;
  b.className = action === "retry" ? "primary" : "danger";
  box.querySelector(".actions").prepend(b);
}

// Copy buttons (outputs are swapped in later: listen on the document).
document.addEventListener("click", async ev => {
  const id = ev.target.dataset && ev.target.dataset.copy;
  if (!id) return;
  const field = document.getElementById(id);
  try { await navigator.clipboard.writeText(field.value); }
  catch (e) { field.select(); document.execCommand("copy"); }
  ev.target.textContent = t("copied");
  setTimeout(() => { ev.target.textContent = t("copy_link"); }, 2000);
});

function upload(form, url, onDone) {
  const bar = form.querySelector("progress");
  const msg = form.querySelector('[role="alert"]');
  const button = form.querySelector('button[type="submit"]');
  const data = new FormData(form);
  for (const [k, v] of [...data.entries()]) {
    if (v === "" || (v instanceof File && !v.name)) data.delete(k);  // empty optional fields
  }
  const xhr = new XMLHttpRequest();
  xhr.open("POST", url);
  xhr.setRequestHeader("X-Lipsyncd-Console", "1");
  xhr.upload.onprogress = ev => { if (ev.lengthComputable) { bar.hidden = false; bar.value = ev.loaded / ev.total; } };
  xhr.onload = () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
    if (xhr.status >= 200 && xhr.status < 300) { onDone(body); return; }
    const err = body && body.error;
    msg.textContent = err ? (err.problems || [err]).map(p => p.message).join(" · ") : t("http_error", {status: xhr.status});
    msg.hidden = false; button.disabled = false; bar.hidden = true;
  };
  xhr.onerror = () => { msg.textContent = t("upload_failed"); msg.hidden = false; button.disabled = false; };
  button.disabled = true; msg.hidden = true;
  xhr.send(data);
}

function newJobForm() {
  const form = document.getElementById("new-job");
  if (!form) return;
  const drop = document.getElementById("drop");
  const audio = document.getElementById("audio"), templates = document.getElementById("template");
  const audioExt = /\.(wav|mp3|m4a|flac|ogg|aac)$/i;
  ["dragenter", "dragover"].forEach(t => drop.addEventListener(t, ev => { ev.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach(t => drop.addEventListener(t, () => drop.classList.remove("over")));
  drop.addEventListener("drop", ev => {
    ev.preventDefault();
    const a = new DataTransfer(), t = new DataTransfer();
    for (const f of ev.dataTransfer.files) (audioExt.test(f.name) ? a : t).items.add(f);
    if (a.files.length) audio.files = a.files;
    if (t.files.length) templates.files = t.files;
  });
  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const picked = form.querySelectorAll('input[name="template_name"]:checked').length;
    const msg = document.getElementById("form-message");
    const text = document.getElementById("text");
    if (!audio.files.length && !(text && text.value.trim())) {
      msg.textContent = t("need_audio");
      msg.hidden = false; return;
    }
    if (!templates.files.length && !picked) {
      msg.textContent = t("need_template");
      msg.hidden = false; return;
    }
    upload(form, "/api/v1/jobs", body => { location.href = `/jobs/${encodeURIComponent(body.name)}`; });
  });
}

function templatesPage() {
  const form = document.getElementById("add-template");
  if (form) form.addEventListener("submit", ev => { ev.preventDefault(); upload(form, "/api/v1/templates", () => location.reload()); });
  document.querySelectorAll("[data-delete-template]").forEach(b => b.addEventListener("click", async () => {
    if (!confirm(t("confirm_delete_template", {name: b.dataset.deleteTemplate}))) return;
    try { await api("DELETE", `/api/v1/templates/${encodeURIComponent(b.dataset.deleteTemplate)}`); location.reload(); }
    catch (e) { alert(e.message); }
  }));
}

async function health() {
  const strip = document.getElementById("health");
  if (!strip) return;
  try {
    const h = await api("GET", "/api/v1/status");
    const dot = ok => `<span class="dot ${ok ? "ok" : "bad"}" aria-hidden="true"></span>`;
    const esc = s => String(s == null ? "" : s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
    const parts = [];
    if (!h.daemons.length) parts.push(`${dot(false)}${esc(t("no_daemon"))}`);
    for (const d of h.daemons) {
      const busy = d.slots.filter(s => s.job).map(s => s.job);
      const values = {host: d.host, engine: d.engine, jobs: busy.join(", "), seconds: Math.round(d.seen_seconds_ago)};
      const key = !d.alive ? "daemon_gone" : busy.length ? "daemon_rendering" : "daemon_idle";
      parts.push(`${dot(d.alive)}${esc(t(key, values))}`);
    }
    for (const s of h.heygem) {
      const values = {server: s.server, state: (MESSAGES.servers || {})[s.state] || s.state, job: s.job};
      parts.push(`${dot(s.state !== "down")}${esc(t(s.job ? "heygem_job" : "heygem", values))}`);
    }
    parts.push(`${dot(h.storage.ok)}${esc(h.storage.ok ? t("store_ok") : t("store_down", {detail: h.storage.detail}))}`);
    parts.push(esc(t("queue", {count: h.queue})));
    strip.innerHTML = parts.map(p => `<span>${p}</span>`).join("");
  } catch (e) { strip.textContent = t("status_unavailable", {message: e.message}); }
}

const HEALTH_EVERY = 10000;  // ms: the strip follows the service, not only the page load
document.addEventListener("DOMContentLoaded", () => {
  liveList(); liveJob(); newJobForm(); templatesPage(); health();
  if (document.getElementById("health")) setInterval(health, HEALTH_EVERY);
});
