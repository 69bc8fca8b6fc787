// CIR web page: plain JS against the service's own API (POST /search, GET /info, GET /facets,
// GET /images/{id}).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, referenceId: null, previewUrl: null, busy: false, again: false, sentFilter: null };

function setError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function setReference({ file = null, referenceId = null, src = null, label = "" }) {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.file = file;
  state.referenceId = referenceId;
  state.previewUrl = file ? URL.createObjectURL(file) : null;
  const img = $("preview");
  img.hidden = !(file || referenceId);
  img.src = state.previewUrl || src || "";
  $("drop-hint").hidden = !img.hidden;
  $("clear").hidden = img.hidden;
  $("ref-label").textContent = label;
}

function pickFile(file) {
  if (!file) return;
  setReference({ file, label: `upload: ${file.name}` });
  search();
}

function errorText(body, status) {
  if (!body) return `HTTP ${status}`;
  if (Array.isArray(body.detail)) return body.detail.map((e) => `${(e.loc || []).slice(-1)[0]}: ${e.msg}`).join("; ");
  return body.detail || body.error || `HTTP ${status}`;
}

async function search() {
  const text = $("text").value.trim();
  if (!state.file && !state.referenceId && !text) {
    setError("Pick an image, click a hit or type a change first.");
    return;
  }
  if (state.busy) { state.again = true; return; }  // one request at a time; rerun with the latest inputs
  state.busy = true;
  setError("");
  const form = new FormData();
  if (state.file) form.append("image", state.file);
  else if (state.referenceId) form.append("reference_id", state.referenceId);
  if (text) form.append("text", text);
  form.append("alpha", $("alpha").value);
  form.append("fusion", $("fusion").value);
  form.append("k", $("k").value);
  const filter = currentFilter();
  if (filter) form.append("filter", filter);
  state.sentFilter = filter;
  $("status").textContent = "searching…";
  try {
    const response = await fetch("/search", { method: "POST", body: form });
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
    img.src = `${hit.image_url}?size=256`;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.innerHTML = `<span>#${hit.rank}</span><span class="score">${hit.score.toFixed(3)}</span>`;
    const id = document.createElement("div");
    id.className = "id";
    id.textContent = hit.id;
    card.append(img, meta, id);
    card.addEventListener("click", () => {
      setReference({ referenceId: hit.id, src: `${hit.image_url}?size=256`, label: `gallery: ${hit.id}` });
      search();
    });
    return card;
  }));
  const t = body.timings_ms;
  const notes = body.warnings.length ? ` · ${body.warnings.join("; ")}` : "";
  $("status").textContent = `${body.results.length} hits · ${body.fusion} α=${body.alpha.toFixed(2)} · ` +
    `${t.total.toFixed(1)} ms · index ${body.index_version}${notes}`;
}

// The tail of a model id or folder path: enough to tell which one serves, without the host's layout.
function lastParts(path, n) {
  return path.replace(/\/+$/, "").split("/").slice(-n).join("/");
}

async function loadInfo() {
  try {
    const response = await fetch("/info");
    const info = await response.json();
    if (!response.ok) throw new Error(errorText(info, response.status));
    $("info").textContent = `${info.count} images · model ${lastParts(info.model, 1)} · ` +
      `${info.adapter ? `TAT adapter ${lastParts(info.adapter, 2)}` : "no adapter"} · index ${info.index_version}`;
    $("alpha").value = info.default_alpha;
    $("alpha-value").textContent = Number(info.default_alpha).toFixed(2);
  } catch (err) {
    $("info").textContent = `service not ready: ${err.message}`;
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
  if (state.file || state.referenceId || $("text").value.trim()) search();
}

async function loadFacets() {
  let fields = {};
  try {
    const response = await fetch("/facets");
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
  if (state.file || state.referenceId || $("text").value.trim()) sliderTimer = setTimeout(search, 150);
});
$("query").addEventListener("submit", (event) => { event.preventDefault(); search(); });
$("fusion").addEventListener("change", () => { if ($("results").children.length) search(); });
$("k").addEventListener("change", () => { if ($("results").children.length) search(); });
$("clear").addEventListener("click", () => setReference({}));
$("file").addEventListener("change", (event) => pickFile(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("click", () => $("file").click());
drop.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") $("file").click(); });
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  pickFile(event.dataTransfer.files[0]);
});
loadInfo();
loadFacets();
