// Knowledge bases: the list this key may read, each KB's documents, and (where the key may write)
// uploads of files and whole folders with per-file progress, then the ingest job's progress and
// its summary, every skipped file with its reason.

import { ApiError, events, getJSON, request, upload } from "./api.js";
import { t } from "./i18n.js";
import { $, el } from "./dom.js";

const enc = (s) => s.split("/").map(encodeURIComponent).join("/");

let kbs = [];
let selected = null;
let onChange = () => {};

export function init(list, changed) {
  kbs = list;
  onChange = changed;
  const zone = $("dropzone");
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    uploadFiles(await droppedFiles(e.dataTransfer));
  });
  $("pick-files").addEventListener("change", (e) => {
    uploadFiles([...e.target.files].map((f) => ({ file: f, path: f.name })));
    e.target.value = "";
  });
  $("pick-folder").addEventListener("change", (e) => {
    uploadFiles([...e.target.files].map((f) => ({ file: f, path: f.webkitRelativePath || f.name })));
    e.target.value = "";
  });
  renderKBs();
  if (kbs.length) open(kbs[0].name);
}

export function setKBs(list) {
  kbs = list;
  renderKBs();
}

function fmtTime(value) {
  if (value == null || value === "") return "";
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return isNaN(d) ? String(value) : d.toLocaleString();
}

function role(r) {
  return t(`role.${r}`);
}

function mayWrite(kb) {
  return kb && (kb.role === "write" || kb.role === "admin");
}

function renderKBs() {
  const body = $("kb-rows");
  $("kbs-none").hidden = kbs.length > 0;
  body.replaceChildren(
    ...kbs.map((kb) => {
      const tr = el("tr", kb.name === selected ? "selected" : "");
      const name = el("button", "link", kb.name);
      name.type = "button";
      name.addEventListener("click", () => open(kb.name));
      const first = el("td");
      first.append(name);
      tr.append(first, el("td", "", role(kb.role)), el("td", "num", kb.files ?? ""), el("td", "num", kb.chunks ?? ""),
        el("td", "wide", kb.embedder ?? ""), el("td", "wide", fmtTime(kb.updated)));
      return tr;
    }),
  );
}

export async function refreshKBs() {
  kbs = await getJSON("/api/kbs");
  renderKBs();
  onChange(kbs);
}

async function open(name) {
  selected = name;
  renderKBs();
  const kb = kbs.find((k) => k.name === name);
  $("kb-detail").hidden = false;
  $("docs-title").textContent = t("docs.title", { kb: name });
  $("upload").hidden = !mayWrite(kb);
  $("readonly").hidden = mayWrite(kb);
  await loadDocs();
}

async function loadDocs() {
  const kb = kbs.find((k) => k.name === selected);
  const docs = await getJSON(`/api/kbs/${encodeURIComponent(selected)}/documents`);
  $("docs-empty").hidden = docs.length > 0;
  $("doc-rows").replaceChildren(...docs.map((d) => docRow(d, kb)));
}

function docRow(doc, kb) {
  const tr = el("tr");
  tr.dataset.source = doc.source;
  const actions = el("td", "actions");
  if (doc.url) {
    const a = el("a", "button small", t("docs.open"));
    a.href = doc.url;
    a.target = "_blank";
    a.rel = "noopener";
    a.setAttribute("aria-label", `${t("docs.open")}: ${doc.source}`);
    actions.append(a);
  }
  if (mayWrite(kb)) {
    const rm = el("button", "small danger", t("docs.remove"));
    rm.type = "button";
    rm.setAttribute("aria-label", `${t("docs.remove")}: ${doc.source}`);
    rm.addEventListener("click", () => removeDoc(doc.source));
    actions.append(rm);
  }
  tr.append(el("td", "file", doc.source), el("td", "", doc.filetype ?? ""), el("td", "num", doc.pages ?? ""),
    el("td", "num", doc.chunks ?? ""), el("td", "wide", fmtTime(doc.ingested_at)), actions);
  return tr;
}

async function removeDoc(source) {
  if (!confirm(t("docs.remove.confirm", { source, kb: selected }))) return;
  let message;
  try {
    await request(`/api/kbs/${encodeURIComponent(selected)}/documents/${enc(source)}`, { method: "DELETE" });
    message = [t("docs.removed", { source }), false];
  } catch (err) {
    message = [t("err.generic", { message: err.message }), true];
  }
  await loadDocs();
  flash(...message); // after the list, so what it says is already true on screen
  await refreshKBs();
}

function flash(message, error = false) {
  const n = $("kb-message");
  n.textContent = message;
  n.classList.toggle("error", error);
  n.hidden = false;
}

// ------------------------------------------------------------------ drag and drop

async function droppedFiles(dt) {
  const entries = [...dt.items].map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  if (entries.every(Boolean)) {
    const out = [];
    for (const entry of entries) await walk(entry, out);
    return out;
  }
  return [...dt.files].map((f) => ({ file: f, path: f.name }));
}

async function walk(entry, out) {
  if (entry.isFile) {
    const file = await new Promise((ok, fail) => entry.file(ok, fail));
    out.push({ file, path: entry.fullPath.replace(/^\/+/, "") || file.name });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      // readEntries returns at most ~100 entries per call: read until it returns none
      const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
      if (!batch.length) break;
      for (const child of batch) await walk(child, out);
    }
  }
}

// ------------------------------------------------------------------ upload and ingest job

async function uploadFiles(items) {
  if (!items.length || !selected) return;
  const kb = selected;
  const batch = el("section", "batch");
  const list = el("ul", "up-list");
  const jobLine = el("p", "job-line");
  jobLine.setAttribute("role", "status");
  const summary = el("div", "job-summary");
  batch.append(list, jobLine, summary);
  $("uploads").prepend(batch);
  let rows = items.map(({ file, path }) => {
    const li = el("li");
    li.dataset.path = path;
    const bar = el("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", path);
    const state = el("span", "up-state", t("up.uploading", { pct: 0 }));
    li.append(el("span", "up-name", path), bar, state);
    list.append(li);
    return { file, path, li, bar, state };
  });
  // Hidden files (.DS_Store, .git/…) are never indexed: leave them out rather than send them.
  let pending = [];
  const local = []; // files skipped before the job: they belong in its summary too
  const skip = (r, reason) => {
    local.push({ source: r.path, reason });
    setState(r, "skipped", t("up.skipped", { reason }));
  };
  for (const r of rows) {
    if (r.path.split("/").some((part) => part.startsWith("."))) skip(r, t("up.hidden"));
    else pending.push(r);
  }
  let job;
  for (;;) {
    if (!pending.length) {
      jobLine.textContent = t("up.nothing");
      showSummary({ state: "done", skipped: [] }, [], jobLine, summary, local);
      return;
    }
    try {
      job = await send(kb, pending);
      break;
    } catch (err) {
      // The server refuses a whole upload that holds a file it will not take (an unsupported
      // type, a bad name), naming that file: mark it skipped with the reason, send the rest.
      const bad = (err.status === 400 || err.status === 415) && refused(pending, err.message);
      if (bad) {
        skip(bad, err.message.replace(/^(['"]).*?\1:\s*/, ""));
        bad.bar.value = 0;
        pending = pending.filter((r) => r !== bad);
        continue;
      }
      for (const r of pending) setState(r, "failed", t("up.failed", { reason: err.message }));
      jobLine.textContent = t("err.generic", { message: err.message });
      jobLine.classList.add("error");
      return;
    }
  }
  rows = pending;
  for (const r of rows) {
    r.bar.value = 100;
    setState(r, "uploaded", t("up.uploaded"));
  }
  // A job that stops moving must not look like one that works: after 10 s without a change the
  // line says for how long nothing has changed.
  let lastSeen = "";
  let lastChange = Date.now();
  let lastJob = null;
  const tick = setInterval(() => lastJob && showJob(lastJob, rows, jobLine, (Date.now() - lastChange) / 1000), 1000);
  let final;
  try {
    final = await follow(job.job, (j) => {
      const seen = `${j.state}|${j.files_done}|${j.chunks}|${j.current}`;
      if (seen !== lastSeen) [lastSeen, lastChange] = [seen, Date.now()];
      lastJob = j;
      showJob(j, rows, jobLine, 0);
    });
  } finally {
    clearInterval(tick);
  }
  showSummary(final, rows, jobLine, summary, local);
  if (selected === kb) await loadDocs();
  await refreshKBs().catch(() => {});
}

function send(kb, rows) {
  const form = new FormData();
  for (const r of rows) form.append("files", r.file, r.path);
  const total = rows.reduce((s, r) => s + r.file.size, 0) || 1;
  return upload(`/api/kbs/${encodeURIComponent(kb)}/uploads`, form, (loaded, all) => {
    // the request carries the files in order: map the bytes sent onto each file's share
    let sent = (loaded / all) * total;
    for (const r of rows) {
      const pct = Math.round(Math.max(0, Math.min(1, sent / (r.file.size || 1))) * 100);
      sent -= r.file.size;
      r.bar.value = pct;
      r.state.textContent = t("up.uploading", { pct });
    }
  });
}

/** The row an upload error names (the server quotes the path, cut at 80 characters). */
function refused(rows, message) {
  const named = rows.filter((r) => {
    const p = r.path.slice(0, 80);
    return message.includes(`'${p}'`) || message.includes(`"${p}"`);
  });
  return named.sort((a, b) => b.path.length - a.path.length)[0] || null;
}

function setState(r, state, text) {
  r.li.dataset.state = state;
  r.state.textContent = text;
}

function matches(r, source) {
  return source === r.path || source.endsWith(`/${r.path}`) || r.path.endsWith(`/${source}`) || source.endsWith(r.path);
}

function showJob(job, rows, line, idle) {
  if (TERMINAL.has(job.state)) return;
  let text = job.state === "queued" ? t("job.queued")
    : t("job.running", { done: job.files_done ?? 0, total: job.files_total ?? rows.length, chunks: job.chunks ?? 0, current: job.current || "…" });
  if (idle >= 10) text += ` ${t("job.idle", { seconds: Math.round(idle) })}`;
  line.textContent = text;
  if (job.state === "running") {
    for (const r of rows) if (job.current && matches(r, job.current)) setState(r, "indexing", t("up.indexing"));
  }
}

function showSummary(job, rows, line, box, local = []) {
  const skipped = [...local, ...(job.skipped || [])];
  if (job.state === "failed") {
    line.textContent = t("job.failed", { error: job.error || "?" });
    line.classList.add("error");
  } else if (job.state === "interrupted") {
    line.textContent = t("job.interrupted");
    line.classList.add("error");
  } else {
    line.textContent = t("job.done", {
      added: job.added ?? 0, updated: job.updated ?? 0, unchanged: job.unchanged ?? 0, skipped: skipped.length,
    });
  }
  for (const r of rows) {
    const skip = (job.skipped || []).find((s) => matches(r, s.source));
    if (skip) setState(r, "skipped", t("up.skipped", { reason: skip.reason }));
    else if (job.state === "done") setState(r, "indexed", t("up.indexed"));
    else setState(r, "failed", t("up.failed", { reason: job.error || job.state }));
  }
  if (skipped.length) {
    const ul = el("ul", "skipped");
    for (const s of skipped) {
      const li = el("li");
      li.append(el("span", "file", s.source), el("span", "reason", ` — ${s.reason}`));
      ul.append(li);
    }
    box.replaceChildren(el("h4", "", t("job.skipped")), ul);
  }
}

const TERMINAL = new Set(["done", "failed", "interrupted"]);

/** Follow a job through its SSE stream; fall back to polling if the stream is unavailable. */
async function follow(id, onUpdate) {
  let last = null;
  try {
    const response = await request(`/api/jobs/${encodeURIComponent(id)}/events`, { headers: { Accept: "text/event-stream" } });
    for await (const job of events(response)) {
      last = job;
      onUpdate(job);
      if (TERMINAL.has(job.state)) return job;
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) throw err;
  }
  for (;;) {
    last = await getJSON(`/api/jobs/${encodeURIComponent(id)}`);
    onUpdate(last);
    if (TERMINAL.has(last.state)) return last;
    await new Promise((r) => setTimeout(r, 1000));
  }
}
