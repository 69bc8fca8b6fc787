// CIR web page: plain JS against the service's own API (POST /search, GET /info, GET /facets,
// GET /images/{id}).
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_REFERENCES = 8;  // the service's limit (cir.search.query.MAX_REFERENCES)
// refs: the reference images, in the order shown: {upload: File} or {id: gallery id}, with src, label, weight
const state = { refs: [], busy: false, again: false, sentFilter: null, displayFields: [], infoLoaded: false,
  background: null };
const BACKGROUND_POLL_MS = 5000;  // how often the info line follows a background job (the demo's TAT run)

function setError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function hasQuery() {
  return state.refs.length > 0 || $("text").value.trim() !== "";
}

function releaseRef(ref) {
  if (ref.upload) URL.revokeObjectURL(ref.src);
}

function renderRefs() {
  $("refs").replaceChildren(...state.refs.map((ref, i) => {
    const box = document.createElement("div");
    box.className = "ref";
    box.title = ref.label;
    const img = document.createElement("img");
    setImage(img, ref.src);
    img.alt = ref.label;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `remove reference ${i + 1}`);
    remove.addEventListener("click", () => removeReference(i));
    const weight = document.createElement("input");
    weight.type = "number";
    weight.min = "0";
    weight.step = "0.5";
    weight.value = String(ref.weight);
    weight.title = "weight of this reference";
    weight.addEventListener("change", () => {
      ref.weight = Math.max(0, Number(weight.value) || 0);
      search();
    });
    box.append(img, remove, weight);
    return box;
  }));
  const n = state.refs.length;
  $("ref-label").textContent = n === 1 ? state.refs[0].label : (n ? `${n} references, merged` : "");
  $("clear").hidden = n === 0;
}

function setReferences(refs) {
  state.refs.forEach(releaseRef);
  state.refs = refs;
  renderRefs();
}

function addReferences(refs) {
  const room = MAX_REFERENCES - state.refs.length;
  if (refs.length > room) setError(`At most ${MAX_REFERENCES} reference images; ${refs.length - room} left out.`);
  refs.slice(room).forEach(releaseRef);
  state.refs = state.refs.concat(refs.slice(0, room));
  renderRefs();
}

function removeReference(index) {
  releaseRef(state.refs[index]);
  state.refs.splice(index, 1);
  renderRefs();
  if (hasQuery()) search();
}

function pickFiles(files) {
  const picked = [...(files || [])].map((file) => (
    { upload: file, src: URL.createObjectURL(file), label: `upload: ${file.name}`, weight: 1 }));
  if (!picked.length) return;
  addReferences(picked);
  search();
}

function appendReferences(form) {
  // the API's order: uploaded images first, then gallery ids; image_weights follows it
  const ordered = state.refs.filter((r) => r.upload).concat(state.refs.filter((r) => !r.upload));
  for (const ref of ordered) {
    if (ref.upload) form.append("image", ref.upload);
    else form.append("reference_id", ref.id);
  }
  if (ordered.some((r) => r.weight !== 1)) form.append("image_weights", ordered.map((r) => r.weight).join(","));
}

function errorText(body, status) {
  if (status === 401) return "this server needs an API key: enter it at the top of the page";
  if (!body) return `HTTP ${status}`;
  if (Array.isArray(body.detail)) return body.detail.map((e) => `${(e.loc || []).slice(-1)[0]}: ${e.msg}`).join("; ");
  return body.detail || body.error || `HTTP ${status}`;
}

async function search() {
  const text = $("text").value.trim();
  if (!hasQuery()) {
    setError("Pick an image, click a hit or type a change first.");
    return;
  }
  if (state.busy) { state.again = true; return; }  // one request at a time; rerun with the latest inputs
  state.busy = true;
  setError("");
  const form = new FormData();
  appendReferences(form);
  if (text) form.append("text", text);
  const negative = $("negative").value.trim();
  if (negative) {
    form.append("negative_text", negative);
    form.append("negative_weight", $("negative-weight").value);
  }
  form.append("alpha", $("alpha").value);
  form.append("fusion", $("fusion").value);
  form.append("k", $("k").value);
  const filter = currentFilter();
  if (filter) form.append("filter", filter);
  state.sentFilter = filter;
  $("status").textContent = "searching…";
  try {
    const response = await apiFetch(apiPath("search"), { method: "POST", body: form });
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error(errorText(body, response.status));
    render(body);
  } catch (err) {
    setError(err.message);
    $("status").textContent = "";
  } finally {
    state.busy = false;
    if (state.again) { state.again = false; search(); }
  }
}

// The display fields of a hit (CIR_DISPLAY_FIELDS, e.g. title and price) as text lines under its image.
function fieldLines(hit) {
  const lines = [];
  state.displayFields.forEach((name, i) => {
    const value = hit.metadata[name];
    if (value === undefined || value === null) return;
    const line = document.createElement("div");
    line.className = i === 0 ? "field first" : "field";
    line.dataset.field = name;  // names and values are data: set as text, never as HTML
    const shown = Array.isArray(value) ? value.join(", ") : (typeof value === "object" ? JSON.stringify(value) : String(value));
    line.textContent = i === 0 ? shown : `${name}: ${shown}`;
    lines.push(line);
  });
  return lines;
}

// A logged search (the server runs with --feedback-dir) learns from what people pick: a click on a hit
// is reported as feedback (docs/supervised.md). Fire and forget: the next search does not wait for it.
function sendFeedback(queryId, itemId, kind) {
  apiFetch("/feedback", {
    method: "POST", keepalive: true, headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query_id: queryId, item_id: itemId, kind }),
  }).catch(() => {});
}

function render(body) {
  const grid = $("results");
  grid.replaceChildren(...body.results.map((hit) => {
    const card = document.createElement("button");
    card.type = "button";
    card.className = "hit";
    card.dataset.id = hit.id;
    card.title = `${hit.id}\n${JSON.stringify(hit.metadata)}`;
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = hit.id;
    setImage(img, `${hit.image_url}?size=256`);
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.innerHTML = hit.score === null ? "" : `<span>#${hit.rank}</span><span class="score">${hit.score.toFixed(3)}</span>`;
    const id = document.createElement("div");
    id.className = "id";
    id.textContent = hit.id;
    card.append(img, ...fieldLines(hit), meta, id);
    card.addEventListener("click", (event) => {
      if (body.query_id) sendFeedback(body.query_id, hit.id, "click");
      const ref = { id: hit.id, src: `${hit.image_url}?size=256`, label: `gallery: ${hit.id}`, weight: 1 };
      if (event.shiftKey) addReferences([ref]);
      else setReferences([ref]);
      search();
    });
    return card;
  }));
  if (!body.timings_ms) {  // GET /browse: items, not ranked hits
    $("status").textContent = `${body.results.length} ${body.order === "newest" ? "newest" : "random"} items of ` +
      `${body.count} · pick one, or search · index ${body.index_version}`;
    return;
  }
  const t = body.timings_ms;
  const notes = body.warnings.length ? ` · ${body.warnings.join("; ")}` : "";
  const refs = body.references > 1 ? ` · ${body.references} references` : "";
  const not = body.negative_weight !== null ? ` · not β=${body.negative_weight.toFixed(2)}` : "";
  $("status").textContent = `${body.results.length} hits · ${body.fusion} α=${body.alpha.toFixed(2)}${refs}${not} · ` +
    `${t.total.toFixed(1)} ms · index ${body.index_version}${notes}`;
}

// The tail of a model id or folder path: enough to tell which one serves, without the host's layout.
function lastParts(path, n) {
  return path.replace(/\/+$/, "").split("/").slice(-n).join("/");
}

async function loadInfo() {
  try {
    const response = await apiFetch(apiPath("info"));
    const info = await response.json();
    if (!response.ok) throw new Error(errorText(info, response.status));
    // while a background job runs (the demo's TAT), its status stands where the adapter will be
    const model = info.background ? info.background
      : (info.adapter ? `TAT adapter ${lastParts(info.adapter, 2)}` : "no adapter");
    $("info").textContent = `${info.count} images · model ${lastParts(info.model, 1)} · ${model} · ` +
      `index ${info.index_version}`;
    state.displayFields = info.display_fields || [];
    if (!state.infoLoaded) {  // the user's slider position survives the polls below
      $("alpha").value = info.default_alpha;
      $("alpha-value").textContent = Number(info.default_alpha).toFixed(2);
    }
    state.infoLoaded = true;
    if (state.background && !info.background) loadFacets();  // the job's new index may bring new fields
    state.background = info.background;
    if (info.background) setTimeout(loadInfo, BACKGROUND_POLL_MS);
  } catch (err) {
    $("info").textContent = `service not ready: ${err.message}`;
  }
}

// The first screen, before any search: gallery items in random order (a new sample each time) or newest first.
async function browse(order) {
  if (state.busy) return;
  setError("");
  try {
    const response = await fetch(`/browse?n=${$("k").value}&order=${order}`);
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error(errorText(body, response.status));
    render(body);
  } catch (err) {
    setError(err.message);
  }
}

// --- metadata filters: controls built from GET /facets, shown only when the index has fields ---
const DATE_INPUT = { date: "date", datetime: "datetime-local" };

function filterLabel(name, info, ...inputs) {
  const label = document.createElement("label");
  label.className = "filter";
  label.dataset.field = name;  // field names are data: set as text and attributes, never as HTML
  label.dataset.type = info.type;
  label.append(document.createTextNode(name), ...inputs);
  return label;
}

function valueSelect(info, multiple) {
  const select = document.createElement("select");
  select.multiple = multiple;
  if (multiple) select.title = "items with any of the selected values (Ctrl/⌘-click to pick several)";
  if (!multiple) select.append(new Option("any", ""));
  for (const [value, count] of Object.entries(info.values)) select.append(new Option(`${value} (${count})`, value));
  return select;
}

function rangeInputs(info) {
  const box = document.createElement("div");
  box.className = "range";
  for (const end of ["min", "max"]) {
    const input = document.createElement("input");
    input.type = DATE_INPUT[info.type] || "number";
    if (input.type === "number") input.step = "any";
    input.dataset.end = end;
    input.placeholder = `${end} ${info[end] ?? ""}`;
    input.title = `${end}: ${info[end] ?? "?"}`;
    box.append(input);
  }
  return box;
}

function filterControl(name, info) {
  if (info.type === "string" || info.type === "tags") {
    if (info.values) return filterLabel(name, info, valueSelect(info, info.type === "tags"));
    const input = document.createElement("input");
    input.type = "text";
    input.placeholder = info.type === "tags" ? "has this tag" : "exact value";
    return filterLabel(name, info, input);
  }
  if (info.type === "boolean") return filterLabel(name, info, valueSelect(info, false));
  if (info.type === "number" || info.type in DATE_INPUT) return filterLabel(name, info, rangeInputs(info));
  return null;  // objects cannot be filtered
}

function controlCondition(label) {
  const type = label.dataset.type;
  const select = label.querySelector("select");
  if (select && select.multiple) {
    const picked = [...select.selectedOptions].map((o) => o.value);
    return picked.length ? { any: picked } : null;
  }
  if (select) return select.value === "" ? null : (type === "boolean" ? select.value === "true" : select.value);
  const inputs = [...label.querySelectorAll("input")];
  if (inputs.length === 1) return inputs[0].value.trim() || null;
  const cond = {};
  for (const input of inputs) {
    if (input.value === "") continue;
    const value = type === "number" ? Number(input.value) : input.value;  // dates stay ISO 8601 text (UTC)
    cond[input.dataset.end === "min" ? "gte" : "lte"] = value;
  }
  return Object.keys(cond).length ? cond : null;
}

function currentFilter() {
  const filter = {};
  for (const label of $("filter-fields").children) {
    const cond = controlCondition(label);
    if (cond !== null) filter[label.dataset.field] = cond;
  }
  return Object.keys(filter).length ? JSON.stringify(filter) : null;
}

function filtersChanged() {
  if (currentFilter() === state.sentFilter) return;  // e.g. the change event after typing a bound
  if (hasQuery()) search();
}

async function loadFacets() {
  let fields = {};
  try {
    const response = await apiFetch(apiPath("facets"));
    if (response.ok) fields = (await response.json()).fields || {};
  } catch (err) {
    fields = {};  // no facets: no filter controls
  }
  const controls = Object.entries(fields).map(([name, info]) => filterControl(name, info)).filter(Boolean);
  $("filter-fields").replaceChildren(...controls);
  $("filters").hidden = controls.length === 0;
}

let filterTimer = null;
$("filter-fields").addEventListener("change", () => { clearTimeout(filterTimer); filtersChanged(); });
$("filter-fields").addEventListener("input", (event) => {
  if (event.target.tagName !== "INPUT") return;  // selects search on change
  clearTimeout(filterTimer);
  filterTimer = setTimeout(filtersChanged, 300);  // typing a bound: search once it pauses
});
$("clear-filters").addEventListener("click", () => {
  for (const el of $("filter-fields").querySelectorAll("input, select")) {
    if (el.multiple) [...el.options].forEach((o) => { o.selected = false; });
    else el.value = "";
  }
  filtersChanged();
});

let sliderTimer = null;
$("alpha").addEventListener("input", () => {
  $("alpha-value").textContent = Number($("alpha").value).toFixed(2);
  clearTimeout(sliderTimer);
  if (hasQuery()) sliderTimer = setTimeout(search, 150);
});
$("negative-weight").addEventListener("input", () => {
  $("negative-weight-value").textContent = Number($("negative-weight").value).toFixed(2);
  clearTimeout(sliderTimer);
  if (hasQuery() && $("negative").value.trim()) sliderTimer = setTimeout(search, 150);
});
$("query").addEventListener("submit", (event) => { event.preventDefault(); search(); });
// browsed items are no query: only a search is rerun
$("fusion").addEventListener("change", () => { if (hasQuery() && $("results").children.length) search(); });
$("k").addEventListener("change", () => { if (hasQuery() && $("results").children.length) search(); });
$("clear").addEventListener("click", () => setReferences([]));
$("file").addEventListener("change", (event) => {
  pickFiles(event.target.files);
  event.target.value = "";  // picking the same file again still adds it
});
const drop = $("drop");
drop.addEventListener("click", () => $("file").click());
drop.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") $("file").click(); });
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  pickFiles(event.dataTransfer.files);
});
$("shuffle").addEventListener("click", () => browse("random"));
$("newest").addEventListener("click", () => browse("newest"));
loadInfo().then(() => { if (!$("results").children.length) browse("random"); });
loadFacets();
setupAccess(() => {  // another gallery or key: start over on it
  setReferences([]);
  $("results").replaceChildren();
  loadInfo();
  loadFacets();
});
