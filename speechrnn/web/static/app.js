// speechrnn's transcription page: files (chosen, dropped or recorded) are sent one at a
// time to POST /api/transcribe; each answer is shown as words shaded by confidence, with
// their start times, that play the audio from there, and downloads in the server's formats.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const MIME = {
  txt: "text/plain", json: "application/json", srt: "application/x-subrip", vtt: "text/vtt",
};
let card = { formats: ["txt", "json", "srt", "vtt"], limits: {} };
let queue = Promise.resolve();
let recordings = 0;

// ---- the model card ---------------------------------------------------------------------

function percent(x) {
  return `${(100 * x).toFixed(1)} %`;
}

function decodingLabel(name) {
  return { greedy: "greedy", beam: "beam", beam_lm: "beam + LM" }[name] || name;
}

async function loadCard() {
  const model = $("#model");
  try {
    const response = await fetch("/api/model");
    if (!response.ok) throw new Error(`the server answered ${response.status}`);
    card = await response.json();
  } catch (err) {
    model.textContent = `The model's details could not be read (${err.message}).`;
    return;
  }
  model.textContent = "";
  const who = card.name
    ? `${card.name}${card.version ? ` version ${card.version}` : ""}`
    : card.model;
  const parts = [
    ["Model", who],
    ["units", `${card.units} (${card.vocabulary} symbols)`],
    ["decoding", card.decoding],
  ];
  const wer = card.test_wer || {};
  const names = Object.keys(wer);
  if (names.length) {
    // the WER of the decoding this server uses first, then the others
    names.sort((a, b) => (b === card.decoding_name) - (a === card.decoding_name));
    parts.push(["test WER", names.map((n) => `${percent(wer[n])} ${decodingLabel(n)}`)
      .join(", ")]);
  }
  parts.forEach(([label, value], i) => {
    if (i) model.append(" · ");
    model.append(`${label} `);
    const strong = document.createElement("strong");
    strong.textContent = value;
    strong.dataset.field = label.toLowerCase().replace(" ", "_");
    model.append(strong);
  });
  const limits = card.limits || {};
  if (limits.max_request_mb && limits.max_audio_s) {
    $("#hint").textContent = `WAV, FLAC, OGG or MP3: up to ${limits.max_request_mb} MB and ` +
      `${duration(limits.max_audio_s)} per file.`;
  }
}

// ---- files ------------------------------------------------------------------------------

function duration(seconds) {
  if (seconds < 60) return `${Math.round(seconds * 10) / 10} s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds - 60 * m);
  return s ? `${m} min ${s} s` : `${m} min`;
}

function clock(seconds) {
  if (seconds < 60) return seconds.toFixed(1);
  const m = Math.floor(seconds / 60);
  return `${m}:${(seconds - 60 * m).toFixed(1).padStart(4, "0")}`;
}

function megabytes(bytes) {
  return (bytes / (1024 * 1024)).toFixed(1);
}

function addFiles(files) {
  for (const file of files) {
    const item = newItem(file);
    queue = queue.then(() => transcribe(item));
  }
}

function newItem(file) {
  const li = $("#result-template").content.firstElementChild.cloneNode(true);
  $(".name", li).textContent = file.name;
  const player = $(".player", li);
  player.src = URL.createObjectURL(file);
  const item = { file, li, player, words: [] };
  setStatus(item, "working", "Waiting…");
  $("#results").prepend(li);
  $("#empty").hidden = true;
  player.addEventListener("timeupdate", () => markPlaying(item));
  player.addEventListener("error", () => { player.hidden = true; }); // the browser can't play it
  return item;
}

function setStatus(item, state, text) {
  item.li.dataset.state = state;
  item.li.classList.toggle("failed", state === "failed");
  $(".status", item.li).textContent = text;
}

async function transcribe(item) {
  const started = performance.now();
  const tick = () => setStatus(item, "working",
    `Transcribing… ${Math.floor((performance.now() - started) / 1000)} s`);
  tick();
  const timer = setInterval(tick, 1000);
  let response, body;
  try {
    response = await fetch(`/api/transcribe?name=${encodeURIComponent(item.file.name)}`, {
      method: "POST", body: item.file, headers: { "Content-Type": "application/octet-stream" },
    });
    const text = await response.text();
    try { body = JSON.parse(text); } catch { body = { message: text.trim() }; }
  } catch (err) {
    clearInterval(timer);
    return fail(item, "Could not reach the server: is speechrnn serve still running?", true);
  }
  clearInterval(timer);
  if (response.ok) return show(item, body);
  const limits = card.limits || {};
  const message = body.message || response.statusText;
  switch (response.status) {
    case 413:
      return fail(item, `Too large: ${megabytes(item.file.size)} MB; this server takes at ` +
        `most ${limits.max_request_mb ?? "?"} MB per file.`);
    case 503:
      return fail(item, "The server is busy: try this file again in a few seconds.", true);
    case 504:
      return fail(item, `Timed out: the server took longer than ` +
        `${duration(limits.timeout_s ?? 0)} on this file.`, true);
    case 400:
      return fail(item, `Not transcribed: ${message}`);
    default:
      return fail(item, `The server answered ${response.status}: ${message}`, true);
  }
}

function fail(item, reason, retry = false) {
  setStatus(item, "failed", reason);
  if (!retry) return;
  const again = document.createElement("button");
  again.type = "button";
  again.className = "button small";
  again.textContent = "Try again";
  again.addEventListener("click", () => {
    again.remove();
    setStatus(item, "working", "Waiting…");
    queue = queue.then(() => transcribe(item));
  });
  $(".result-head", item.li).append(again);
}

// ---- a transcript -----------------------------------------------------------------------

function shade(confidence) {
  if (confidence >= 0.9) return "c4";
  if (confidence >= 0.75) return "c3";
  if (confidence >= 0.6) return "c2";
  if (confidence >= 0.4) return "c1";
  return "c0";
}

function show(item, result) {
  const count = result.words.length;
  item.li.dataset.words = String(count);
  setStatus(item, "done", `${count} word${count === 1 ? "" : "s"} · ` +
    `${duration(result.duration)} · confidence ${Math.round(100 * result.confidence)} %`);
  const transcript = $(".transcript", item.li);
  transcript.replaceChildren();
  transcript.hidden = false;
  if (!count) {
    transcript.textContent = "(no speech heard)";
  }
  item.words = result.words.map((w) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = `word ${shade(w.confidence)}`;
    button.textContent = w.word;
    button.dataset.time = clock(w.start);
    const said = `${w.start.toFixed(2)}–${w.end.toFixed(2)} s, confidence ` +
      `${Math.round(100 * w.confidence)} %`;
    button.title = said;
    button.setAttribute("aria-label", `${w.word}: ${said}; plays from here`);
    button.addEventListener("click", () => play(item, w.start));
    button.addEventListener("focus", () => detail(item, w, said));
    button.addEventListener("mouseenter", () => detail(item, w, said));
    transcript.append(button);
    return { ...w, button };
  });
  const text = document.createElement("span");
  text.className = "visually-hidden text";
  text.textContent = result.text;
  transcript.append(text);
  const downloads = $(".downloads", item.li);
  downloads.hidden = false;
  const stem = item.file.name.replace(/\.[^.]*$/, "") || "transcript";
  for (const fmt of card.formats) {
    if (!(fmt in result.formats)) continue;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button small";
    button.dataset.format = fmt;
    button.textContent = fmt.toUpperCase();
    button.setAttribute("aria-label", `Download ${stem}.${fmt}`);
    button.addEventListener("click", () => save(`${stem}.${fmt}`, result.formats[fmt],
      MIME[fmt]));
    downloads.append(button);
  }
}

function detail(item, w, said) {
  const line = $(".detail", item.li);
  line.hidden = false;
  line.textContent = `“${w.word}”: ${said}`;
}

function play(item, start) {
  item.player.currentTime = start;
  item.player.play().catch(() => {});
}

function markPlaying(item) {
  const t = item.player.currentTime;
  for (const w of item.words) {
    w.button.classList.toggle("playing", !item.player.paused && t >= w.start && t < w.end);
  }
}

function save(name, text, type) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: `${type};charset=utf-8` }));
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

// ---- the microphone ---------------------------------------------------------------------

let recorder = null;

async function startRecording() {
  const status = $("#record-status");
  if (!navigator.mediaDevices?.getUserMedia || !window.AudioWorkletNode) {
    status.textContent = "Recording needs a browser with microphone access (and a page " +
      "served from localhost or https).";
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    status.textContent = `No microphone: ${err.message || err.name}.`;
    return;
  }
  const context = new AudioContext();
  await context.audioWorklet.addModule("/static/recorder.js");
  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, "recorder");
  const chunks = [];
  node.port.onmessage = (event) => chunks.push(event.data);
  source.connect(node);
  node.connect(context.destination); // silent: keeps the worklet pulled
  const started = performance.now();
  const most = (card.limits || {}).max_audio_s || 600;
  recorder = { stream, context, chunks, timer: null };
  recorder.timer = setInterval(() => {
    const seconds = (performance.now() - started) / 1000;
    status.textContent = `Recording… ${duration(Math.floor(seconds))}`;
    if (seconds >= most) stopRecording();
  }, 250);
  const button = $("#record");
  button.setAttribute("aria-pressed", "true");
  $("#record-label").textContent = "Stop";
  status.textContent = "Recording…";
}

async function stopRecording() {
  if (!recorder) return;
  const { stream, context, chunks, timer } = recorder;
  recorder = null;
  clearInterval(timer);
  stream.getTracks().forEach((t) => t.stop());
  await context.close();
  $("#record").setAttribute("aria-pressed", "false");
  $("#record-label").textContent = "Record";
  const samples = chunks.reduce((n, c) => n + c.length, 0);
  $("#record-status").textContent = "";
  if (!samples) {
    $("#record-status").textContent = "Nothing was recorded.";
    return;
  }
  recordings += 1;
  const wav = encodeWav(chunks, samples, context.sampleRate);
  addFiles([new File([wav], `recording-${recordings}.wav`, { type: "audio/wav" })]);
}

function encodeWav(chunks, samples, rate) {
  const buffer = new ArrayBuffer(44 + 2 * samples);
  const view = new DataView(buffer);
  const text = (offset, s) => [...s].forEach((ch, i) => view.setUint8(offset + i,
    ch.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + 2 * samples, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, 2 * rate, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, 2 * samples, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (const x of chunk) {
      const clipped = Math.max(-1, Math.min(1, x));
      view.setInt16(offset, clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff, true);
      offset += 2;
    }
  }
  return buffer;
}

// ---- wiring -----------------------------------------------------------------------------

function wire() {
  const input = $("#files");
  input.addEventListener("change", () => {
    addFiles([...input.files]);
    input.value = "";
  });
  const drop = $("#drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    addFiles([...event.dataTransfer.files]);
  });
  // a file dropped beside the zone is not opened by the browser in place of the page
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  $("#record").addEventListener("click", () => (recorder ? stopRecording()
    : startRecording()));
  loadCard();
}

wire();
