// Talking to `localrag serve`: the Bearer key, the error shape, and Server-Sent Events read with
// fetch (EventSource cannot send an Authorization header).

const KEY = "localrag.key";
let signedOutHandler = () => {};

export class ApiError extends Error {
  constructor(status, message, type = "", code = "") {
    super(message);
    this.status = status;
    this.type = type;
    this.code = code;
  }
}

export function key() {
  return sessionStorage.getItem(KEY);
}

export function setKey(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

/** Called with a reason ("revoked") whenever the server refuses the key we hold. */
export function onSignedOut(handler) {
  signedOutHandler = handler;
}

export function authHeader() {
  return { Authorization: `Bearer ${key()}` };
}

async function errorFrom(response) {
  let message = `${response.status} ${response.statusText}`;
  let type = "";
  let code = "";
  try {
    const body = await response.json();
    const err = body.error || body;
    if (typeof err === "string") message = err;
    else if (err && (err.message || err.detail)) {
      message = err.message || (typeof err.detail === "string" ? err.detail : JSON.stringify(err.detail));
      type = err.type || "";
      code = err.code || "";
    }
  } catch {
    /* not JSON: keep the status line */
  }
  return new ApiError(response.status, message, type, code);
}

/** fetch() with the key; a 401 signs the page out (the key was revoked or has expired). */
export async function request(path, { method = "GET", body, signal, headers = {}, quiet401 = false } = {}) {
  const h = { ...authHeader(), ...headers };
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    h["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers: h, body: payload, signal, cache: "no-store" });
  if (response.status === 401) {
    const err = await errorFrom(response);
    if (!quiet401) signedOutHandler("revoked");
    throw err;
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

export async function getJSON(path, opts) {
  return (await request(path, opts)).json();
}

/** The JSON objects of an SSE body, one per `data:` event, until `[DONE]` or the end. */
export async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = block
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/** POST a multipart form with XMLHttpRequest, which (unlike fetch) reports upload progress. */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Authorization", `Bearer ${key()}`);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded, e.total);
    xhr.onerror = () => reject(new ApiError(0, "network error"));
    xhr.onload = () => {
      const body = xhr.response || {};
      if (xhr.status === 401) signedOutHandler("revoked");
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        const err = body.error || {};
        reject(new ApiError(xhr.status, err.message || `${xhr.status} ${xhr.statusText}`, err.type, err.code));
      }
    };
    xhr.send(form);
  });
}
