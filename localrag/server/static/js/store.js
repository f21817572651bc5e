// Conversations kept in localStorage, one list per signed-in key name, so two people sharing a
// browser profile do not see each other's chats under their own keys.

let storageKey = "localrag.conversations";

export function useUser(name) {
  storageKey = `localrag.conversations.${name}`;
}

export function load() {
  try {
    const list = JSON.parse(localStorage.getItem(storageKey) || "[]");
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

export function save(list) {
  try {
    localStorage.setItem(storageKey, JSON.stringify(list));
  } catch {
    // storage full: drop the oldest conversation and try once more, rather than lose the new one
    if (list.length > 1) {
      list.sort((a, b) => b.updated - a.updated);
      list.pop();
      localStorage.setItem(storageKey, JSON.stringify(list));
    }
  }
}

export function newConversation(kb) {
  const now = Date.now();
  return { id: `c${now.toString(36)}${Math.random().toString(36).slice(2, 7)}`, title: "", kb, created: now, updated: now, messages: [] };
}

export function lastKB() {
  return localStorage.getItem("localrag.lastkb");
}

export function setLastKB(kb) {
  localStorage.setItem("localrag.lastkb", kb);
}
