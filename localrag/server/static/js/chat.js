// The chat: conversations (localStorage), the streamed answer with its reasoning, stages and
// citations. Everything the model or a document says is rendered through md.js or textContent.

import { events, request } from "./api.js";
import * as cite from "./cite.js";
import { t } from "./i18n.js";
import { renderMarkdown } from "./md.js";
import * as store from "./store.js";
import { $, el } from "./dom.js";

let kbs = [];
let conversations = [];
let current = null;
let running = null; // {conv, msg, controller, view}

export function init(readableKBs) {
  kbs = readableKBs;
  conversations = store.load();
  cite.init();
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  $("question").addEventListener("keydown", (e) => {
    // Enter sends, Shift+Enter breaks the line; never while an IME is composing (Chinese input)
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      send();
    }
  });
  document.addEventListener("keydown", (e) => e.key === "Escape" && running && stop());
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", () => {
    select(null);
    closeMenu();
    $("question").focus();
  });
  $("kb-select").addEventListener("change", () => {
    store.setLastKB($("kb-select").value);
    if (current) {
      current.kb = $("kb-select").value;
      persist();
    }
  });
  fillKBs();
  const first = [...conversations].sort((a, b) => b.updated - a.updated)[0];
  select(first && kbs.some((k) => k.name === first.kb) ? first.id : null);
}

export function setKBs(list) {
  kbs = list;
  fillKBs();
}

function fillKBs() {
  const sel = $("kb-select");
  const keep = current?.kb || sel.value || store.lastKB();
  sel.replaceChildren(...kbs.map((k) => Object.assign(el("option", "", k.name), { value: k.name })));
  if (kbs.some((k) => k.name === keep)) sel.value = keep;
  const none = kbs.length === 0;
  $("nokb").hidden = !none;
  $("question").disabled = $("send").disabled = none;
}

function persist() {
  store.save(conversations);
  renderList();
}

// ------------------------------------------------------------------ conversation list

function renderList() {
  const ul = $("conv-list");
  const sorted = [...conversations].sort((a, b) => b.updated - a.updated);
  ul.replaceChildren(...sorted.map(listItem));
}

function listItem(conv) {
  const li = el("li", conv === current ? "conv active" : "conv");
  li.dataset.id = conv.id;
  const open = el("button", "conv-title", conv.title || t("conv.untitled"));
  open.type = "button";
  if (conv === current) open.setAttribute("aria-current", "true");
  open.addEventListener("click", () => {
    select(conv.id);
    closeMenu();
  });
  const rename = el("button", "icon conv-rename", "✎");
  rename.type = "button";
  rename.setAttribute("aria-label", `${t("conv.rename")}: ${conv.title || t("conv.untitled")}`);
  rename.title = t("conv.rename");
  rename.addEventListener("click", () => startRename(li, conv));
  const del = el("button", "icon conv-delete", "✕");
  del.type = "button";
  del.setAttribute("aria-label", `${t("conv.delete")}: ${conv.title || t("conv.untitled")}`);
  del.title = t("conv.delete");
  del.addEventListener("click", () => remove(conv));
  li.append(open, rename, del);
  return li;
}

function startRename(li, conv) {
  const input = el("input", "conv-edit");
  input.value = conv.title || "";
  input.setAttribute("aria-label", t("conv.title.label"));
  let done = false;
  const finish = (keep) => {
    if (done) return;
    done = true;
    if (keep && input.value.trim()) {
      conv.title = input.value.trim().slice(0, 120);
      if (conv === current) $("conv-title").textContent = conv.title;
    }
    persist();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") finish(true);
    if (e.key === "Escape") {
      e.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
  li.replaceChildren(input);
  input.focus();
  input.select();
}

function remove(conv) {
  if (!confirm(t("conv.delete.confirm", { title: conv.title || t("conv.untitled") }))) return;
  if (running?.conv === conv) stop();
  conversations = conversations.filter((c) => c !== conv);
  if (conv === current) select(null);
  persist();
}

function select(id) {
  if (running && running.conv.id !== id) stop();
  current = conversations.find((c) => c.id === id) || null;
  if (current && kbs.some((k) => k.name === current.kb)) $("kb-select").value = current.kb;
  $("conv-title").textContent = current ? current.title || t("conv.untitled") : "";
  renderMessages();
  renderList();
}

function closeMenu() {
  document.body.classList.remove("menu-open");
  $("menu-toggle").setAttribute("aria-expanded", "false");
}

// ------------------------------------------------------------------ messages

function renderMessages() {
  const box = $("messages");
  if (!current || current.messages.length === 0) {
    box.replaceChildren(el("p", "empty", t("chat.empty")));
    return;
  }
  box.replaceChildren(...current.messages.map((m) => (m.role === "user" ? userView(m) : assistantView(m).root)));
  box.scrollTop = box.scrollHeight;
}

function userView(msg) {
  const root = el("article", "msg user");
  root.append(el("div", "who", t("chat.you")), el("div", "body plain", msg.content));
  return root;
}

function assistantView(msg) {
  const root = el("article", "msg assistant");
  root.setAttribute("aria-label", t("chat.assistant"));
  const reasoning = el("details", "reasoning");
  const summary = el("summary");
  const rbody = el("div", "reasoning-body");
  reasoning.append(summary, rbody);
  const body = el("div", "body md");
  const note = el("p", "note");
  const sources = el("div", "sources");
  const meta = el("div", "meta");
  root.append(reasoning, body, note, sources, meta);
  const view = { root, reasoning, summary, rbody, body, note, sources, meta };
  update(view, msg, true);
  return view;
}

function sourceByN(msg, n) {
  return (msg.sources || []).find((s) => s.n === n);
}

function citeLink(msg, n) {
  const src = sourceByN(msg, n);
  if (!src) return null;
  const a = el("a", "cite", `[${n}]`);
  a.href = cite.documentHref(src) || "#";
  a.target = "_blank";
  a.rel = "noopener";
  a.setAttribute("aria-label", `${t("src.cited")} ${n}: ${cite.label(src)}`);
  cite.attach(a, src);
  return a;
}

function citedNumbers(msg) {
  if (msg.done && Array.isArray(msg.citations)) return new Set(msg.citations);
  const found = new Set();
  for (const m of (msg.content || "").matchAll(/\[(\d{1,3}(?:\s*[,，;、]\s*\d{1,3})*)\]/g)) {
    for (const n of m[1].split(/\s*[,，;、]\s*/)) found.add(parseInt(n, 10));
  }
  return found;
}

function isCited(msg, src, numbers) {
  return msg.done && typeof src.cited === "boolean" ? src.cited : numbers.has(src.n);
}

function update(view, msg, full = false) {
  // reasoning: closed by default; the summary carries its length and time
  const hasReasoning = Boolean(msg.reasoning);
  view.reasoning.hidden = !hasReasoning;
  if (hasReasoning) {
    const tokens = msg.reasoning_tokens ?? msg.reasoning_chunks ?? 0;
    const seconds = (msg.reasoning_s ?? ((msg.reasoning_end || Date.now()) - (msg.reasoning_start || Date.now())) / 1000).toFixed(1);
    view.summary.textContent = t(msg.reasoning_end || msg.done ? "reason.done" : "reason.live", { tokens, seconds });
    if (view.rbody.textContent !== msg.reasoning) view.rbody.textContent = msg.reasoning;
  }
  view.body.replaceChildren(renderMarkdown(msg.content || "", { cite: (n) => citeLink(msg, n) }));
  view.root.classList.toggle("streaming", !msg.done && !msg.stopped && !msg.error);
  let note = "";
  if (msg.error) note = t("chat.error", { message: msg.error });
  else if (msg.stopped) note = t("chat.stopped");
  else if (msg.done && msg.not_found) note = t("chat.notfound");
  view.note.textContent = note;
  view.note.hidden = !note;
  view.note.classList.toggle("error", Boolean(msg.error));
  if (full || msg.done || msg.stopped || msg.error || view.sourcesCount !== (msg.sources || []).length) {
    renderSources(view, msg);
  }
  renderMeta(view, msg);
}

function sourceItem(src, msg) {
  const li = el("li");
  const b = el("button", "src-item");
  b.type = "button";
  b.append(el("span", "src-n", src.n != null ? `[${src.n}]` : "•"), el("span", "src-label", cite.label(src)));
  cite.attach(b, src);
  li.append(b);
  const href = cite.documentHref(src);
  if (href) {
    const open = el("a", "src-open", "↗");
    open.href = href;
    open.target = "_blank";
    open.rel = "noopener";
    open.setAttribute("aria-label", src.page && href.includes("#page=") ? t("cite.openpage", { page: src.page }) : t("cite.open"));
    open.title = open.getAttribute("aria-label");
    li.append(open);
  }
  return li;
}

function renderSources(view, msg) {
  const sources = msg.sources || [];
  const leftOut = msg.left_out || [];
  view.sourcesCount = sources.length;
  const numbers = citedNumbers(msg);
  const cited = sources.filter((s) => isCited(msg, s, numbers));
  const uncited = sources.filter((s) => !isCited(msg, s, numbers));
  const parts = [];
  if (cited.length) {
    const sec = el("section", "src-cited");
    const ul = el("ul", "src-list");
    ul.append(...cited.map((s) => sourceItem(s, msg)));
    sec.append(el("h4", "", t("src.cited")), ul);
    parts.push(sec);
  }
  const quotes = msg.figure_quotes || [];
  if (quotes.length) {
    // each figure of the answer with the source line that holds it: a number taken from another
    // context shows that context (BENCHMARKS §18)
    const sec = el("section", "src-figures");
    const ul = el("ul", "src-list");
    for (const q of quotes) {
      const li = el("li");
      li.append(el("span", "fig-figure", String(q.figure)));
      const link = citeLink(msg, q.n);
      li.append(link || el("span", "src-n", `[${q.n}]`));
      li.append(el("q", "fig-quote", String(q.quote)));
      ul.append(li);
    }
    sec.append(el("h4", "", t("src.figures")), ul);
    parts.push(sec);
  }
  if (uncited.length) {
    const d = el("details", "src-uncited");
    const ul = el("ul", "src-list");
    ul.append(...uncited.map((s) => sourceItem(s, msg)));
    d.append(el("summary", "", t("src.uncited", { count: uncited.length })), ul);
    parts.push(d);
  }
  if (msg.rendered) parts.push(el("p", "src-rendered", t("src.rendered", { query: msg.rendered })));
  if ((msg.unmentioned || []).length) {
    const terms = msg.unmentioned.map((w) => `"${w}"`).join(", ");
    parts.push(el("p", "src-unmentioned", t("src.unmentioned", { terms })));
  }
  if (leftOut.length) {
    const d = el("details", "src-leftout");
    const ul = el("ul", "src-list");
    for (const s of leftOut) {
      const li = el("li");
      li.append(el("span", "src-label", cite.label(s)));
      if (s.reason) li.append(el("span", "src-reason", ` — ${s.reason}`));
      ul.append(li);
    }
    d.append(el("summary", "", t("src.leftout", { count: leftOut.length })), ul);
    parts.push(d);
  }
  view.sources.replaceChildren(...parts);
  view.sources.hidden = parts.length === 0;
}

function renderMeta(view, msg) {
  const tm = msg.timings;
  if (!msg.done || !tm) {
    view.meta.textContent = "";
    return;
  }
  const tokens = tm.gen_tokens ?? msg.usage?.completion_tokens ?? "?";
  view.meta.textContent = t("timing.summary", {
    ttft: (tm.ttft_s ?? 0).toFixed(1),
    tokens,
    total: (tm.total_s ?? 0).toFixed(1),
  });
}

// ------------------------------------------------------------------ status line

let statusTimer = 0;

function status(stage, info = {}) {
  const box = $("status");
  const bar = $("status-bar");
  clearTimeout(statusTimer);
  box.dataset.stage = stage || "";
  if (!stage) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  box.classList.remove("late");
  const text = $("status-text");
  if (stage === "reading") {
    const seconds = Math.max(0.1, Number(info.prefill_s) || 0);
    text.textContent = t("stage.reading", { tokens: info.prompt_tokens ?? "?", seconds: seconds.toFixed(1) });
    bar.parentElement.hidden = false;
    bar.style.transition = "none";
    bar.style.width = "0%";
    void bar.offsetWidth; // restart the transition from empty
    bar.style.transition = `width ${seconds}s linear`;
    bar.style.width = "100%";
    statusTimer = setTimeout(() => {
      if (box.dataset.stage === "reading") {
        box.classList.add("late");
        text.textContent = t("stage.reading.late", { tokens: info.prompt_tokens ?? "?" });
      }
    }, seconds * 1000 + 500);
    return;
  }
  bar.parentElement.hidden = true;
  text.textContent = t(`stage.${stage}`, info);
}

// ------------------------------------------------------------------ sending

function history(conv) {
  // Only what was said goes back: earlier reasoning is left out (it would eat the context), and
  // failed turns with no answer are skipped.
  const out = [];
  for (const m of conv.messages) {
    if (m.role === "assistant" && !m.content) continue;
    out.push({ role: m.role, content: m.content });
  }
  return out;
}

async function send() {
  const q = $("question");
  const text = q.value.trim();
  if (!text || running || !$("kb-select").value) return;
  if (!current) {
    current = store.newConversation($("kb-select").value);
    conversations.push(current);
  }
  current.kb = $("kb-select").value;
  if (!current.title) {
    current.title = text.replace(/\s+/g, " ").slice(0, 60);
    $("conv-title").textContent = current.title;
  }
  if (current.messages.length === 0) $("messages").replaceChildren();
  current.messages.push({ role: "user", content: text });
  const msg = { role: "assistant", content: "", reasoning: "", sources: [], left_out: [], kb: current.kb, done: false };
  const payload = { model: `kb:${current.kb}`, stream: true, messages: history(current), sources_in_content: false };
  current.messages.push(msg);
  current.updated = Date.now();
  q.value = "";
  persist();
  $("messages").append(userView({ content: text }));
  const view = assistantView(msg);
  $("messages").append(view.root);
  scrollDown(true);
  await stream(current, msg, view, payload);
}

async function stream(conv, msg, view, payload) {
  const controller = new AbortController();
  running = { conv, msg, controller, view };
  $("stop").hidden = false;
  $("send").hidden = true;
  status("sending");
  let frame = 0;
  const paint = () => {
    frame = 0;
    if (current === conv) {
      update(view, msg);
      scrollDown();
    }
  };
  const later = () => frame || (frame = requestAnimationFrame(paint));
  try {
    const response = await request("/v1/chat/completions", { method: "POST", body: payload, signal: controller.signal });
    for await (const chunk of events(response)) {
      apply(msg, chunk);
      later();
    }
    msg.done = true;
  } catch (err) {
    if (err.name === "AbortError") msg.stopped = true;
    else msg.error = err.message || String(err);
  } finally {
    cancelAnimationFrame(frame);
    if (msg.reasoning && !msg.reasoning_end) msg.reasoning_end = Date.now();
    running = null;
    status(null);
    $("stop").hidden = true;
    $("send").hidden = false;
    conv.updated = Date.now();
    persist();
    if (current === conv) {
      update(view, msg, true);
      scrollDown();
    }
  }
}

function apply(msg, chunk) {
  if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
  const lr = chunk.localrag;
  if (lr && lr.stage) {
    if (lr.stage === "reading") {
      msg.sources = lr.sources || msg.sources;
      msg.left_out = lr.left_out || msg.left_out;
      msg.unmentioned = lr.unmentioned || msg.unmentioned;
      msg.rendered = lr.rendered || msg.rendered;
    }
    if (lr.stage === "done") {
      msg.citations = lr.citations;
      msg.figure_quotes = Array.isArray(lr.figure_quotes) ? lr.figure_quotes : [];
      // the server's final text, when it differs from the stream (a citation was removed)
      if (typeof lr.content === "string") msg.content = lr.content;
      msg.not_found = Boolean(lr.not_found);
      msg.timings = lr.timings;
      if (lr.timings?.thinking_s != null && msg.reasoning) msg.reasoning_s = lr.timings.thinking_s;
      if (lr.timings?.thinking_tokens != null && msg.reasoning) msg.reasoning_tokens = lr.timings.thinking_tokens;
      msg.done = true;
    } else if (lr.stage !== "thinking" || !msg.content) {
      status(lr.stage, { ...lr, tokens: msg.reasoning_chunks || 0 });
    }
  }
  if (Array.isArray(chunk.sources)) msg.sources = chunk.sources;
  if (Array.isArray(chunk.left_out)) msg.left_out = chunk.left_out;
  if (chunk.usage) {
    msg.usage = chunk.usage;
    const rt = chunk.usage.completion_tokens_details?.reasoning_tokens;
    if (rt != null && msg.reasoning) msg.reasoning_tokens = rt;
  }
  const delta = chunk.choices?.[0]?.delta || {};
  if (delta.reasoning_content) {
    if (!msg.reasoning_start) msg.reasoning_start = Date.now();
    msg.reasoning += delta.reasoning_content;
    msg.reasoning_chunks = (msg.reasoning_chunks || 0) + 1;
    if (!msg.content) status("thinking", { tokens: msg.reasoning_chunks });
  }
  if (delta.content) {
    if (msg.reasoning && !msg.reasoning_end) msg.reasoning_end = Date.now();
    if (!msg.content) status("answering");
    msg.content += delta.content;
  }
}

function stop() {
  running?.controller.abort();
}

function scrollDown(force = false) {
  const box = $("messages");
  const near = box.scrollHeight - box.scrollTop - box.clientHeight < 120;
  if (force || near) box.scrollTop = box.scrollHeight;
}
