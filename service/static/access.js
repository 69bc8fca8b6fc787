// CIR web page: the read key and the gallery picker, shared by app.js.
// A server started with CIR_READ_API_KEY answers reads only with the key: the page keeps the key the
// user types in this browser's localStorage and sends it as X-API-Key on every call. <img> tags
// cannot send headers, so with a key set gallery images are fetched with it and shown from blob URLs.
"use strict";

const KEY_STORE = "cir-api-key";
const access = {
  key: localStorage.getItem(KEY_STORE) || "",
  collection: "",  // "" = the first gallery, on the top-level routes
  blobs: new Map(),  // image URL -> blob URL (kept for the page's life, oldest dropped past BLOB_MAX)
};
const BLOB_MAX = 400;

// A route of the picked gallery: "search" -> /search or /collections/NAME/search
function apiPath(route) {
  return access.collection ? `/collections/${encodeURIComponent(access.collection)}/${route}` : `/${route}`;
}

function apiFetch(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (access.key) headers.set("X-API-Key", access.key);
  return fetch(path, { ...options, headers });
}

async function setImage(img, url) {
  if (!access.key || url.startsWith("blob:")) { img.src = url; return; }
  if (!access.blobs.has(url)) {
    const response = await apiFetch(url);
    if (!response.ok) { img.alt = `${img.alt} (HTTP ${response.status})`; return; }
    access.blobs.set(url, URL.createObjectURL(await response.blob()));
    if (access.blobs.size > BLOB_MAX) {
      const [oldest, blob] = access.blobs.entries().next().value;
      access.blobs.delete(oldest);
      URL.revokeObjectURL(blob);
    }
  }
  img.src = access.blobs.get(url);
}

async function loadCollections(onChange) {
  const picker = document.getElementById("collection");
  try {
    const response = await apiFetch("/collections");
    if (!response.ok) return;
    const names = (await response.json()).collections.map((c) => c.name);
    picker.replaceChildren(...names.map((name, i) => {
      const option = document.createElement("option");
      option.value = i === 0 ? "" : name;  // the first gallery answers on the top-level routes
      option.textContent = name;
      return option;
    }));
    picker.value = access.collection;
    picker.parentElement.hidden = names.length < 2;
  } catch (err) {
    picker.parentElement.hidden = true;
  }
  picker.onchange = () => { access.collection = picker.value; onChange(); };
}

function setupAccess(onChange) {
  const input = document.getElementById("api-key");
  input.value = access.key;
  input.addEventListener("change", () => {
    access.key = input.value.trim();
    if (access.key) localStorage.setItem(KEY_STORE, access.key);
    else localStorage.removeItem(KEY_STORE);
    loadCollections(onChange);
    onChange();
  });
  loadCollections(onChange);
}
