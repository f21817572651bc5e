// A small Markdown subset rendered straight to DOM nodes. Model output and document text are never
// parsed as HTML: every piece of text becomes a Text node (textContent), and the only elements
// created are the fixed ones below. A link keeps its href only for http(s), mailto, # and
// same-origin paths, so `javascript:` URLs cannot run.
//
// Blocks: paragraphs, # headings, ``` fenced code (an unclosed fence while streaming is still
// code), > quotes, - / 1. lists (nested by indentation), pipe tables, --- rules.
// Inline: `code`, **bold**, *italic*, ~~strike~~, [text](url), and citations [n] / [n, m],
// which the caller turns into links through `cite(n)`.

import { t } from "./i18n.js";

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$/;

function el(tag, cls) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  return node;
}

function startsBlock(line, next) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line) ||
    (line.includes("|") && next !== undefined && TABLE_SEP.test(next));
}

/** Render `text` to a DocumentFragment. `cite(n)` returns a Node for a known citation or null. */
export function renderMarkdown(text, { cite = () => null } = {}) {
  const frag = document.createDocumentFragment();
  renderBlocks(String(text ?? "").replace(/\r\n?/g, "\n").split("\n"), frag, cite);
  return frag;
}

function renderBlocks(lines, parent, cite) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i++;
      continue;
    }
    let m;
    if ((m = line.match(FENCE))) {
      const close = new RegExp(`^\\s{0,3}${m[1][0]}{${m[1].length},}\\s*$`);
      const body = [];
      i++;
      while (i < lines.length && !close.test(lines[i])) body.push(lines[i++]);
      i++;
      parent.append(codeBlock(body.join("\n"), m[2]));
    } else if ((m = line.match(HEADING))) {
      const h = el(`h${Math.min(6, m[1].length + 2)}`, "md-h");
      inline(m[2], h, cite);
      parent.append(h);
      i++;
    } else if (RULE.test(line)) {
      parent.append(el("hr"));
      i++;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && (m = lines[i].match(QUOTE))) {
        body.push(m[1]);
        i++;
      }
      const q = el("blockquote");
      renderBlocks(body, q, cite);
      parent.append(q);
    } else if (ITEM.test(line)) {
      i = list(lines, i, parent, cite);
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1])) {
      i = table(lines, i, parent, cite);
    } else {
      const body = [line];
      i++;
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i], lines[i + 1])) body.push(lines[i++]);
      const p = el("p");
      inline(body.join("\n"), p, cite);
      parent.append(p);
    }
  }
}

function codeBlock(code, language) {
  const wrap = el("div", "md-code");
  const pre = el("pre");
  const c = el("code");
  if (language) {
    c.dataset.lang = language;
    const tag = el("span", "md-lang");
    tag.textContent = language;
    wrap.append(tag);
  }
  c.textContent = code;
  pre.append(c);
  const copy = el("button", "md-copy");
  copy.type = "button";
  copy.textContent = t("chat.copy");
  copy.addEventListener("click", () =>
    navigator.clipboard?.writeText(code).then(() => (copy.textContent = t("chat.copied")), () => {}));
  wrap.append(copy, pre);
  return wrap;
}

function list(lines, i, parent, cite) {
  const first = lines[i].match(ITEM);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const node = el(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
  let item = null;
  while (i < lines.length) {
    const line = lines[i];
    const m = line.match(ITEM);
    if (m && m[1].length === indent && /\d/.test(m[2]) === ordered) {
      item = { lines: [m[3]] };
      node.append(Object.assign(el("li"), { _md: item }));
      i++;
    } else if (m && m[1].length < indent) {
      break;
    } else if (!line.trim()) {
      // a blank line ends the list unless the next line is indented under it or is another item
      const next = lines[i + 1];
      if (next === undefined || !(next.match(ITEM) || /^\s{2,}\S/.test(next))) break;
      item.lines.push("");
      i++;
    } else if (m || /^\s+\S/.test(line)) {
      item.lines.push(line.slice(Math.min(indent + 2, line.length - line.trimStart().length)));
      i++;
    } else if (item && item.lines[item.lines.length - 1].trim()) {
      item.lines.push(line); // lazy continuation of the item's paragraph
      i++;
    } else break;
  }
  for (const li of node.children) {
    const body = li._md.lines;
    if (body.length === 1 || !body.slice(1).some((l) => ITEM.test(l) || FENCE.test(l) || !l.trim())) {
      inline(body.join("\n"), li, cite);
    } else {
      renderBlocks(body, li, cite);
    }
    delete li._md;
  }
  parent.append(node);
  return i;
}

function cells(line) {
  let s = line.trim();
  if (s.startsWith("|")) s = s.slice(1);
  if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
  return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

function table(lines, i, parent, cite) {
  const wrap = el("div", "md-table");
  const tbl = el("table");
  const head = el("thead");
  const tr = el("tr");
  for (const c of cells(lines[i])) {
    const th = el("th");
    inline(c, th, cite);
    tr.append(th);
  }
  head.append(tr);
  tbl.append(head);
  const body = el("tbody");
  i += 2;
  while (i < lines.length && lines[i].includes("|") && lines[i].trim()) {
    const row = el("tr");
    for (const c of cells(lines[i])) {
      const td = el("td");
      inline(c, td, cite);
      row.append(td);
    }
    body.append(row);
    i++;
  }
  tbl.append(body);
  wrap.append(tbl);
  parent.append(wrap);
  return i;
}

// One alternation per inline form; the earliest match wins, text before it stays text.
const INLINE = new RegExp(
  [
    "(`+)([^`]|[^`][\\s\\S]*?[^`])\\1(?!`)", // 1,2 code span
    "\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*", // 3 bold
    "__(?=\\S)([\\s\\S]*?\\S)__", // 4 bold
    "~~(?=\\S)([\\s\\S]*?\\S)~~", // 5 strike
    "\\*(?=[^\\s*])([^*]*?[^\\s*])\\*", // 6 italic
    "\\[([^\\]\\n]+)\\]\\(\\s*([^)\\s]+)\\s*\\)", // 7,8 link
    "\\[(\\d{1,3}(?:\\s*[,，;、]\\s*\\d{1,3})*)\\]", // 9 citation(s)
  ].join("|"),
  "g",
);

const SAFE_URL = /^(https?:|mailto:|#|\/(?!\/))/i;

function text(s, parent) {
  const parts = s.split("\n");
  parts.forEach((part, k) => {
    if (k) parent.append(el("br"));
    if (part) parent.append(document.createTextNode(part));
  });
}

function inline(s, parent, cite) {
  let last = 0;
  INLINE.lastIndex = 0;
  const matches = [...s.matchAll(INLINE)];
  for (const m of matches) {
    if (m.index < last) continue;
    text(s.slice(last, m.index), parent);
    last = m.index + m[0].length;
    if (m[2] !== undefined) {
      const c = el("code");
      c.textContent = m[2].replace(/^ (.*) $/, "$1");
      parent.append(c);
    } else if (m[3] !== undefined || m[4] !== undefined) {
      const b = el("strong");
      inline(m[3] ?? m[4], b, cite);
      parent.append(b);
    } else if (m[5] !== undefined) {
      const d = el("del");
      inline(m[5], d, cite);
      parent.append(d);
    } else if (m[6] !== undefined) {
      const e = el("em");
      inline(m[6], e, cite);
      parent.append(e);
    } else if (m[7] !== undefined) {
      if (SAFE_URL.test(m[8])) {
        const a = el("a");
        a.href = m[8];
        a.target = "_blank";
        a.rel = "noopener noreferrer";
        inline(m[7], a, cite);
        parent.append(a);
      } else text(m[0], parent);
    } else if (m[9] !== undefined) {
      citations(m[0], m[9], parent, cite);
    }
  }
  text(s.slice(last), parent);
}

function citations(whole, list, parent, cite) {
  const nums = list.split(/\s*[,，;、]\s*/).map((n) => parseInt(n, 10));
  const nodes = nums.map((n) => cite(n));
  if (nodes.some((n) => !n)) {
    text(whole, parent); // a number the model was never given: leave it as text
    return;
  }
  nodes.forEach((node) => parent.append(node));
}
