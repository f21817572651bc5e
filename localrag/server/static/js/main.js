// Start-up: sign in with an API key (kept in sessionStorage, so it dies with the tab), then show
// only the knowledge bases that key may read. A refused key at any point signs the page out.

import * as api from "./api.js";
import * as chat from "./chat.js";
import { t, translatePage } from "./i18n.js";
import * as kbs from "./kbs.js";
import * as store from "./store.js";
import { $ } from "./dom.js";

let started = false;
let checkTimer = 0;

function showSignin(message = "") {
  $("app").hidden = true;
  $("signin").hidden = false;
  const err = $("signin-error");
  err.textContent = message;
  err.hidden = !message;
  $("key").value = "";
  $("key").focus();
}

async function enter(fresh) {
  let me;
  let list;
  try {
    me = await api.getJSON("/api/me", { quiet401: true });
    list = await api.getJSON("/api/kbs", { quiet401: true });
  } catch (err) {
    api.setKey(null);
    showSignin(err.status === 401 ? (fresh ? t("signin.bad") : t("signin.revoked")) : err.status ? err.message : t("signin.offline"));
    return;
  }
  store.useUser(me.name);
  $("whoami").textContent = me.admin ? `${me.name} (${t("role.admin")})` : me.name;
  $("signin").hidden = true;
  $("app").hidden = false;
  if (!started) {
    started = true;
    chat.init(list);
    kbs.init(list, (l) => chat.setKBs(l));
  } else {
    // a different key in the same tab: reload so no state of the previous key survives
    location.reload();
    return;
  }
  tab(location.hash === "#kbs" ? "kbs" : "chat");
  clearInterval(checkTimer);
  checkTimer = setInterval(check, 60000);
  $("question").focus();
}

/** A revoked key should not wait for the next question to find out. */
async function check() {
  if (!api.key()) return;
  try {
    await api.getJSON("/api/me");
  } catch {
    /* a 401 signs out through the handler; a network blip is ignored */
  }
}

function tab(name) {
  for (const which of ["chat", "kbs"]) {
    const on = which === name;
    $(`tab-${which}`).setAttribute("aria-selected", String(on));
    $(`${which}-view`).hidden = !on;
  }
  document.body.dataset.tab = name; // the conversation list belongs to the chat only
  history.replaceState(null, "", name === "kbs" ? "#kbs" : "#chat");
}

function boot() {
  translatePage();
  api.onSignedOut((reason) => {
    api.setKey(null);
    clearInterval(checkTimer);
    if (started) {
      // drop everything shown under the old key, then ask for a new one
      sessionStorage.setItem("localrag.signout", reason);
      location.reload();
    } else showSignin(t("signin.revoked"));
  });
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("key").value.trim();
    if (!value) return;
    api.setKey(value);
    enter(true);
  });
  $("signout").addEventListener("click", () => {
    api.setKey(null);
    location.hash = "";
    location.reload();
  });
  $("tab-chat").addEventListener("click", () => tab("chat"));
  $("tab-kbs").addEventListener("click", () => tab("kbs"));
  $("menu-toggle").addEventListener("click", () => {
    const open = document.body.classList.toggle("menu-open");
    $("menu-toggle").setAttribute("aria-expanded", String(open));
  });
  document.addEventListener("visibilitychange", () => document.visibilityState === "visible" && check());
  const reason = sessionStorage.getItem("localrag.signout");
  sessionStorage.removeItem("localrag.signout");
  if (api.key()) enter(false);
  else showSignin(reason === "revoked" ? t("signin.revoked") : "");
}

boot();
