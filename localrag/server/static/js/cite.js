// The citation card: what the model was given for [n] (SOURCE.text), its file, heading and page,
// and a link to the original document (a PDF opens at the cited page). Hover or focus shows it,
// a click pins it until closed.

import { t } from "./i18n.js";

const card = () => document.getElementById("cite-card");
let pinned = false;
let hideTimer = 0;

export function documentHref(source) {
  if (!source.url) return null;
  const pdf = /\.pdf$/i.test(source.source || "") || /\.pdf(\?|$)/i.test(source.url.split("#")[0]);
  return pdf && source.page ? `${source.url.split("#")[0]}#page=${source.page}` : source.url;
}

export function label(source) {
  const parts = [source.source];
  if (source.heading) parts.push(source.heading);
  if (source.page) parts.push(t("cite.page", { page: source.page }));
  return parts.join(" · ");
}

function fill(source) {
  const c = card();
  c.querySelector(".cite-n").textContent = source.n != null ? `[${source.n}]` : "";
  c.querySelector(".cite-file").textContent = source.source || "";
  c.querySelector(".cite-heading").textContent = source.heading || "";
  c.querySelector(".cite-page").textContent = source.page ? t("cite.page", { page: source.page }) : "";
  c.querySelector(".cite-text").textContent = source.text || "";
  const open = c.querySelector(".cite-open");
  const href = documentHref(source);
  open.hidden = !href;
  if (href) {
    open.href = href;
    open.textContent = source.page && href.includes("#page=") ? t("cite.openpage", { page: source.page }) : t("cite.open");
  }
}

function place(anchor) {
  const c = card();
  if (window.innerWidth < 600) {
    c.classList.add("sheet"); // a bottom sheet on phones
    c.style.left = c.style.top = c.style.maxHeight = "";
    return;
  }
  c.classList.remove("sheet");
  const r = anchor.getBoundingClientRect();
  const w = Math.min(480, window.innerWidth - 24);
  const left = Math.max(12, Math.min(r.left, window.innerWidth - w - 12));
  c.style.width = `${w}px`;
  c.style.left = `${left}px`;
  // below the citation if it fits, else above; if neither fits, the roomier side, shortened, so
  // the card never covers the link it belongs to
  c.style.maxHeight = "";
  const h = Math.min(c.offsetHeight || 320, window.innerHeight * 0.6);
  const spaceBelow = window.innerHeight - r.bottom - 16;
  const spaceAbove = r.top - 16;
  if (h <= spaceBelow || (h > spaceAbove && spaceBelow >= spaceAbove)) {
    c.style.top = `${r.bottom + 8}px`;
    c.style.maxHeight = `${Math.max(120, spaceBelow)}px`;
  } else {
    const room = Math.min(h, spaceAbove);
    c.style.top = `${r.top - room - 8}px`;
    c.style.maxHeight = `${Math.max(120, room)}px`;
  }
}

export function show(anchor, source, pin) {
  clearTimeout(hideTimer);
  const c = card();
  fill(source);
  c.hidden = false;
  place(anchor);
  if (pin) {
    pinned = true;
    c.classList.add("pinned");
    c.querySelector(".cite-close").focus({ preventScroll: true });
  }
}

export function hide(force = false) {
  if (pinned && !force) return;
  pinned = false;
  const c = card();
  c.hidden = true;
  c.classList.remove("pinned");
}

/** Wire an element (a citation link or a source entry) to show `source` in the card. */
const canHover = () => window.matchMedia("(hover: hover)").matches && window.innerWidth >= 600;

export function attach(node, source) {
  // a preview on hover where there is a mouse and room; on phones a tap opens the sheet
  node.addEventListener("mouseenter", () => !pinned && canHover() && show(node, source, false));
  node.addEventListener("mouseleave", () => {
    if (!pinned) hideTimer = setTimeout(() => hide(), 250);
  });
  node.addEventListener("click", (e) => {
    if (e.ctrlKey || e.metaKey || e.shiftKey || e.button === 1) return; // let the browser open the document
    e.preventDefault();
    show(node, source, true);
  });
}

export function init() {
  const c = card();
  c.querySelector(".cite-close").addEventListener("click", () => hide(true));
  c.addEventListener("mouseenter", () => clearTimeout(hideTimer));
  c.addEventListener("mouseleave", () => {
    if (!pinned) hideTimer = setTimeout(() => hide(), 250);
  });
  document.addEventListener("keydown", (e) => e.key === "Escape" && !c.hidden && hide(true));
  document.addEventListener("click", (e) => {
    if (!c.hidden && !c.contains(e.target) && !e.target.closest(".cite, .src-item")) hide(true);
  });
}
