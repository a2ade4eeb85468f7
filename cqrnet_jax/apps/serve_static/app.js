// The page of `cqrnet-jax serve`: uploads dropped files, polls their jobs, shows each result.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const jobs = new Map(); // job id -> {card, data}
const FINISHED = new Set(["done", "skipped", "failed"]);
let limits = null;
let polling = null;

async function api(url, options) {
  const response = await fetch(url, options);
  let body = {};
  try {
    body = await response.json();
  } catch (err) {
    // not JSON: keep the status line below
  }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

const megabytes = (n) => `${(n / 1e6).toFixed(1)} MB`;
const strength = () => Number($("#strength").value) / 100;
const stem = (name) => name.replace(/\.[^.]*$/, "") || "image";

function resultUrl(id) {
  const s = strength();
  return `/api/jobs/${id}/after.png` + (s < 1 ? `?strength=${s}` : "");
}

function newCard(name) {
  const card = $("#card").content.firstElementChild.cloneNode(true);
  $(".name", card).textContent = name;
  $(".remove", card).onclick = () => card.remove(); // until the server has it
  $("#cards").prepend(card);
  const split = $(".split", card);
  split.addEventListener("input", () => setSplit(card, split.value / 10));
  $(".zoom", card).addEventListener("change", () => setZoom(card));
  $(".after", card).addEventListener("load", () => setZoom(card));
  setSplit(card, 50);
  return card;
}

function setSplit(card, percent) {
  $(".after", card).style.clipPath = `inset(0 0 0 ${percent}%)`;
  $(".divider", card).style.left = `${percent}%`;
}

function setZoom(card) {
  // fit: the whole image in the viewer, never enlarged; else image pixels times the zoom
  const zoom = Number($(".zoom", card).value);
  const stage = $(".stage", card);
  const image = $(".after", card);
  const viewer = $(".viewer", card);
  const width = image.naturalWidth;
  if (!width) return;
  const fit = Math.min(
    width,
    viewer.clientWidth,
    (width * parseFloat(getComputedStyle(viewer).maxHeight)) / image.naturalHeight,
  );
  stage.style.width = `${zoom ? width * zoom : Math.floor(fit)}px`;
  stage.classList.toggle("pixels", zoom >= 2);
}

function fail(card, message) {
  card.className = "card failed";
  $(".message", card).textContent = message;
  $(".progress", card).hidden = true;
}

function describe(data) {
  const parts = [];
  if (data.width) parts.push(`${data.width} × ${data.height}`);
  parts.push(data.quality || `not a JPEG (${data.format || "unknown format"})`);
  if (data.estimate !== null) parts.push(`ranker's estimate: quality ${data.estimate}`);
  else if (!FINISHED.has(data.state)) parts.push("ranker's estimate: …");
  return parts.join(" · ");
}

function stateText(data) {
  if (data.state === "queued") return `queued (${data.position} ahead)`;
  if (data.state === "running") {
    if (data.estimate === null && !data.tiles_done && !data.warnings.length) {
      return "estimating its quality…";
    }
    return data.tiles_total > 1
      ? `restoring: tile ${data.tiles_done} of ${data.tiles_total}`
      : "restoring…";
  }
  return data.message || "";
}

function update(entry, data) {
  const card = entry.card;
  entry.data = data;
  card.className = `card ${data.state}`;
  card.dataset.id = data.id;
  $(".info", card).textContent = describe(data);
  $(".warnings", card).replaceChildren(
    ...data.warnings.map((text) => Object.assign(document.createElement("li"), {textContent: text})),
  );
  $(".message", card).textContent = stateText(data);
  const progress = $(".progress", card);
  progress.hidden = FINISHED.has(data.state);
  progress.value = data.state === "running" ? data.tiles_done / data.tiles_total : 0;
  $(".force", card).hidden = data.state !== "skipped";
  const compare = $(".compare", card);
  if (data.state === "done" && compare.hidden) {
    $(".before", card).src = `/api/jobs/${data.id}/before.png`;
    $(".after", card).src = `/api/jobs/${data.id}/after.png`;
    compare.hidden = false;
    applyStrength();
  }
}

function applyStrength() {
  const s = strength();
  $("#strength-value").textContent = `${Math.round(s * 100)}%`;
  let done = 0;
  for (const [id, entry] of jobs) {
    if (entry.data.state !== "done") continue;
    done += 1;
    $(".after", entry.card).style.opacity = s; // the same blend as the download's, drawn
    const link = $(".download", entry.card);
    link.href = resultUrl(id);
    link.download = `${stem(entry.data.name)}.png`;
  }
  $("#download-all").disabled = done === 0;
}

async function poll() {
  const ids = [...jobs].filter(([, e]) => !FINISHED.has(e.data.state)).map(([id]) => id);
  if (!ids.length) {
    polling = null;
    return;
  }
  try {
    for (const data of await api(`/api/jobs?ids=${ids.join(",")}`)) update(jobs.get(data.id), data);
  } catch (err) {
    showPageError(`lost the server: ${err.message}`);
  }
  polling = setTimeout(poll, 300);
}

function startPolling() {
  if (!polling) polling = setTimeout(poll, 300);
}

async function upload(file) {
  const card = newCard(file.name);
  if (limits && file.size > limits.max_upload_bytes) {
    fail(card, `${file.name}: ${megabytes(file.size)} is above this server's upload limit of ` +
      `${megabytes(limits.max_upload_bytes)} (serve --max-upload-mb)`);
    return;
  }
  $(".message", card).textContent = "uploading…";
  const force = $("#force").checked ? 1 : 0;
  try {
    const url = `/api/jobs?name=${encodeURIComponent(file.name)}&force=${force}`;
    const data = await api(url, {method: "POST", body: file});
    const entry = {card, data};
    jobs.set(data.id, entry);
    $(".force", card).addEventListener("click", () => forceJob(entry));
    $(".remove", card).onclick = () => removeJob(entry);
    update(entry, data);
    startPolling();
  } catch (err) {
    fail(card, err.message);
  }
}

async function forceJob(entry) {
  try {
    update(entry, await api(`/api/jobs/${entry.data.id}/force`, {method: "POST"}));
    startPolling();
  } catch (err) {
    fail(entry.card, err.message);
  }
}

async function removeJob(entry) {
  try {
    await api(`/api/jobs/${entry.data.id}`, {method: "DELETE"});
    jobs.delete(entry.data.id);
    entry.card.remove();
    applyStrength();
  } catch (err) {
    showPageError(err.message);
  }
}

async function uploadAll(files) {
  for (const file of files) await upload(file); // in order: the queue keeps the drop's order
}

async function downloadAll() {
  const ids = [...jobs].filter(([, e]) => e.data.state === "done").map(([id]) => id);
  try {
    const response = await fetch(`/api/zip?ids=${ids.join(",")}&strength=${strength()}`);
    if (!response.ok) throw new Error((await response.json()).error);
    const link = Object.assign(document.createElement("a"), {download: "restored.zip"});
    link.href = URL.createObjectURL(await response.blob());
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  } catch (err) {
    showPageError(`download: ${err.message}`);
  }
}

function showPageError(message) {
  const box = $("#page-error");
  box.textContent = message;
  box.hidden = false;
}

async function init() {
  const drop = $("#drop");
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (e) => e.preventDefault());
  drop.addEventListener("dragover", () => drop.classList.add("over"));
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    drop.classList.remove("over");
    uploadAll([...e.dataTransfer.files]);
  });
  $("#files").addEventListener("change", (e) => {
    uploadAll([...e.target.files]);
    e.target.value = "";
  });
  $("#strength").addEventListener("input", applyStrength);
  $("#download-all").addEventListener("click", downloadAll);
  try {
    limits = await api("/api/limits");
    $("#limits").textContent =
      `up to ${megabytes(limits.max_upload_bytes)} and ` +
      `${(limits.max_pixels / 1e6).toFixed(0)} megapixels a file; JPEGs above quality ` +
      `${limits.restore_limit} are left alone unless “restore anyway”`;
  } catch (err) {
    showPageError(`cannot reach the server: ${err.message}`);
  }
}

init();
