"""`GET /`: a small page to try the server in a browser (no build step, no external assets).

The server fills `{{CONFIG}}` with what the page needs to know (served model ids, whether word
times exist) and `{{MODEL}}` with the served id for the title. The page posts to a relative
URL, so it works unchanged behind a reverse proxy at a sub-path; the API key is typed on the
page, sent as a header and kept in sessionStorage at most (gone when the tab closes). A result
keeps the name of the recording that produced it: a new file, a new recording or a failed
request clears it, so a transcript is never shown or saved under another recording's name.
"""

PAGE = r"""<!doctype html>
<html lang="ko">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>voxadapt: {{MODEL}}</title>
<style>
  *, *::before, *::after { box-sizing: border-box; }
  [hidden] { display: none !important; }  /* also over .row's flex */
  body { font-family: system-ui, "Apple SD Gothic Neo", "Malgun Gothic", "Noto Sans KR",
         "Noto Sans CJK KR", "NanumGothic", sans-serif; max-width: 52rem; margin: 1.5rem auto;
         padding: 0 1rem; color: #1b1f24; overflow-wrap: anywhere; }
  h1 { font-size: 1.3rem; } .muted { color: #5b6570; font-size: .9rem; }
  form { display: grid; gap: .6rem; grid-template-columns: 9rem minmax(0, 1fr);
         align-items: center; }
  input, select, audio { max-width: 100%; min-width: 0; }
  input[type=file], audio { width: 100%; }
  .row { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
  button { padding: .4rem 1rem; } #status { min-height: 1.2rem; }
  #status.error { color: #b42318; } #record.on { background: #b42318; color: #fff; }
  #transcript { font-size: 1.15rem; line-height: 1.6; white-space: pre-wrap;
                word-break: keep-all; border-left: 4px solid #2f6fdb; padding-left: .8rem; }
  #transcript:empty { display: none; }
  .word { cursor: pointer; border-radius: 3px; } .word:hover { background: #dbe7fb; }
  table { border-collapse: collapse; width: 100%; margin-top: 1rem; table-layout: fixed; }
  td, th { border-bottom: 1px solid #d8dde3; padding: .3rem .4rem; text-align: left;
           vertical-align: top; }
  th.time { width: 5.2rem; }
  td.time { font-variant-numeric: tabular-nums; white-space: nowrap; color: #5b6570; }
  td.time button { padding: 0; border: 0; background: none; color: #2f6fdb; font: inherit;
                   cursor: pointer; text-decoration: underline; }
  @media (max-width: 36rem) {
    body { margin-top: 1rem; }
    form { grid-template-columns: minmax(0, 1fr); gap: .3rem; }
    form label, form .label { margin-top: .5rem; }
    th.time { width: 4.4rem; } td, th { padding: .3rem .25rem; }
  }
</style>
</head>
<body>
<script id="config" type="application/json">{{CONFIG}}</script>
<h1>voxadapt · <span id="model-name">{{MODEL}}</span></h1>
<p class="muted">Audio is sent to this server only and is not kept after the answer.</p>
<form id="form">
  <label for="file">Audio file</label>
  <input id="file" name="file" type="file" accept="audio/*">
  <span class="label">Microphone</span>
  <div class="row">
    <button id="record" type="button">Record</button>
    <span id="recording" class="muted"></span>
  </div>
  <span class="label player" hidden>Audio</span>
  <audio id="player" class="player" controls preload="metadata" hidden></audio>
  <label for="model" class="models" hidden>Model</label>
  <select id="model" name="model" class="models" hidden></select>
  <label for="language">Language</label><input id="language" name="language" value="ko">
  <label for="hotwords">Hotwords</label>
  <input id="hotwords" name="hotwords" placeholder="고혈압, CT|씨티">
  <label for="key">API key</label>
  <input id="key" type="password" autocomplete="off" placeholder="only if the server has one">
  <span></span><button id="send" type="submit">Transcribe</button>
</form>
<p id="status" role="status"></p>
<section id="result">
  <div id="transcript"></div>
  <table id="segments" hidden>
    <thead><tr><th class="time">start</th><th class="time">end</th><th>text</th></tr></thead>
    <tbody></tbody>
  </table>
  <p id="downloads" class="row" hidden>
    <button id="srt" type="button">Download SRT</button>
    <button id="vtt" type="button">Download VTT</button>
    <button id="txt" type="button">Download text</button>
  </p>
</section>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const config = JSON.parse($("config").textContent);
const KEY = "voxadapt.api-key";  // sessionStorage only: never written to localStorage
let chosen = null;  // {file, name}: what Transcribe sends (a picked file or a recording)
let result = null;  // {data, name}: the last answer and the recording that produced it
let request = null;  // the AbortController of the request in flight
let playerUrl = null;

// The API beside this page, whatever path a proxy serves it under: a page at /asr (no
// trailing slash) would otherwise resolve a relative URL against / instead of /asr/.
function apiUrl(path) {
  const base = new URL(window.location.href);
  base.search = ""; base.hash = "";
  if (!base.pathname.endsWith("/")) base.pathname += "/";
  return new URL(path, base).href;
}

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").className = kind || "";
}

function stamp(seconds, sep) {
  let ms = Math.max(0, Math.round(seconds * 1000));
  const h = Math.floor(ms / 3600000); ms -= h * 3600000;
  const m = Math.floor(ms / 60000); ms -= m * 60000;
  const s = Math.floor(ms / 1000); ms -= s * 1000;
  const two = (n) => String(n).padStart(2, "0");
  return `${two(h)}:${two(m)}:${two(s)}${sep}${String(ms).padStart(3, "0")}`;
}

function clock(seconds) {  // short, for the table: 0:05.24, 1:02:05.24
  const cs = Math.max(0, Math.round(seconds * 100));
  const h = Math.floor(cs / 360000), m = Math.floor(cs / 6000) % 60;
  const s = ((cs % 6000) / 100).toFixed(2).padStart(5, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

// As the server's own subtitles: a cue on one line (a blank line would end it early) and
// without "-->", which marks cue timings.
function cueText(text) {
  return (text || "").replace(/[ \t]*[\r\n\v\f\x85\u2028\u2029]+[ \t]*/g, " ")
    .replace(/^[ \t]+|[ \t]+$/g, "").replaceAll("-->", "->");
}

function cues(format) {
  const parts = result.data.segments.map((s) => ({...s, text: cueText(s.text)}))
    .filter((s) => s.text);
  if (format === "vtt") {
    return "WEBVTT\n\n" + parts.map((s) =>
      `${stamp(s.start, ".")} --> ${stamp(s.end, ".")}\n${s.text}\n\n`).join("");
  }
  return parts.map((s, i) =>
    `${i + 1}\n${stamp(s.start, ",")} --> ${stamp(s.end, ",")}\n${s.text}\n`).join("\n");
}

function download(format) {
  if (!result) return;
  const text = format === "txt" ? result.data.text + "\n" : cues(format);
  const blob = new Blob([text], {type: "text/plain;charset=utf-8"});
  const link = document.createElement("a");
  const stem = result.name.replace(/\.[^.]+$/, "") || "audio";
  link.href = URL.createObjectURL(blob); link.download = `${stem}.${format}`; link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function seek(seconds) {
  const player = $("player");
  if (!player.src) return;
  player.currentTime = seconds;
  player.play().catch(() => {});
}

function clearResult() {
  result = null;
  $("transcript").replaceChildren();
  $("segments").querySelector("tbody").replaceChildren();
  $("segments").hidden = true;
  $("downloads").hidden = true;
}

// The transcript as text with each timed word a span that seeks the player; the text stays
// exactly the server's (words are found in it in order), spans join with spaces otherwise.
function showTranscript(data) {
  const box = $("transcript");
  const words = Array.isArray(data.words) ? data.words : [];
  if (!words.length) { box.textContent = data.text; return; }
  const nodes = [];
  let at = 0, exact = true;
  for (const w of words) {
    const found = data.text.indexOf(w.word.trim(), at);
    if (!w.word.trim() || found < 0) { exact = false; break; }
    nodes.push(document.createTextNode(data.text.slice(at, found)));
    nodes.push(wordSpan(w, w.word.trim()));
    at = found + w.word.trim().length;
  }
  if (exact) {
    nodes.push(document.createTextNode(data.text.slice(at)));
  } else {
    nodes.length = 0;
    words.forEach((w, i) => {
      if (i) nodes.push(document.createTextNode(" "));
      nodes.push(wordSpan(w, w.word.trim()));
    });
  }
  box.replaceChildren(...nodes);
}

function wordSpan(w, text) {
  const span = document.createElement("span");
  span.className = "word"; span.textContent = text; span.dataset.start = w.start;
  span.title = `${clock(w.start)}–${clock(w.end)}`;
  return span;
}

function showResult(data, name) {
  result = {data, name};
  showTranscript(data);
  const rows = $("segments").querySelector("tbody");
  for (const s of data.segments || []) {
    const row = rows.insertRow();
    const start = row.insertCell(), end = row.insertCell();
    start.className = end.className = "time";
    const jump = document.createElement("button");
    jump.type = "button"; jump.textContent = clock(s.start); jump.onclick = () => seek(s.start);
    start.append(jump);
    end.textContent = clock(s.end);
    row.insertCell().textContent = s.text;
  }
  const count = (data.segments || []).length;
  $("segments").hidden = count === 0; $("downloads").hidden = count === 0;
  const words = Array.isArray(data.words) ? `, ${data.words.length} word(s)` : "";
  const seconds = Number(data.duration || 0).toFixed(1);
  setStatus(`${name}: ${seconds} s of audio, ${count} segment(s)${words}.`);
}

function choose(file, name) {
  if (request) {  // its answer would belong to the previous recording
    request.abort(); request = null; $("send").disabled = false;
  }
  clearResult();
  chosen = file ? {file, name} : null;
  if (playerUrl) URL.revokeObjectURL(playerUrl);
  playerUrl = file ? URL.createObjectURL(file) : null;
  if (playerUrl) $("player").src = playerUrl; else $("player").removeAttribute("src");
  document.querySelectorAll(".player").forEach((element) => { element.hidden = !file; });
  setStatus(file ? `${name} is ready to transcribe.` : "");
}

async function errorMessage(response) {
  if (response.status === 401) {
    $("key").focus();
    return "the server needs an API key: type it in the API key field.";
  }
  try {
    const data = await response.json();
    if (data.error && data.error.message) return data.error.message;
  } catch (ignored) { /* a proxy's HTML error page */ }
  return `HTTP ${response.status} ${response.statusText}`.trim();
}

$("form").onsubmit = async (event) => {
  event.preventDefault();
  if (!chosen) { setStatus("Choose an audio file or record first.", "error"); return; }
  if (request) request.abort();
  clearResult();
  const {file, name} = chosen;
  const body = new FormData();
  body.append("file", file, name);
  body.append("model", $("model").value || config.model);
  body.append("language", $("language").value.trim() || "ko");
  body.append("response_format", "verbose_json");
  body.append("timestamp_granularities[]", "segment");
  if (config.words) body.append("timestamp_granularities[]", "word");
  if ($("hotwords").value.trim()) body.append("hotwords", $("hotwords").value.trim());
  const key = $("key").value.trim();
  const headers = key ? {Authorization: `Bearer ${key}`} : {};
  const controller = new AbortController();
  request = controller;
  // The seconds are aria-hidden: a screen reader hears "Transcribing…" once, not each tick.
  setStatus(`Transcribing ${name}…`);
  const elapsed = document.createElement("span"), started = Date.now();
  elapsed.setAttribute("aria-hidden", "true");
  $("status").append(elapsed);
  const tick = () => {
    elapsed.textContent = ` ${Math.floor((Date.now() - started) / 1000)} s`;
  };
  tick();
  const timer = setInterval(tick, 1000);
  $("send").disabled = true;
  try {
    const response = await fetch(apiUrl("v1/audio/transcriptions"),
      {method: "POST", body, headers, signal: controller.signal});
    if (!response.ok) throw new Error(await errorMessage(response));
    const data = await response.json();
    if (request !== controller) return;
    showResult(data, name);
  } catch (error) {
    if (request !== controller || error.name === "AbortError") return;
    clearResult();
    setStatus(`Error: ${error.message}`, "error");
  } finally {
    clearInterval(timer);
    if (request === controller) { request = null; $("send").disabled = false; }
  }
};

// ------------------------------------------------------------------ microphone
let recorder = null;

function recordingName(now) {
  const two = (n) => String(n).padStart(2, "0");
  const day = `${now.getFullYear()}${two(now.getMonth() + 1)}${two(now.getDate())}`;
  return `recording-${day}-${two(now.getHours())}${two(now.getMinutes())}${two(now.getSeconds())}`;
}

async function startRecording() {
  let stream;
  $("record").disabled = true;  // until the browser has asked for the microphone
  try {
    stream = await navigator.mediaDevices.getUserMedia({audio: true});
  } catch (error) {
    setStatus(`Error: the microphone is not available (${error.message}).`, "error");
    return;
  } finally {
    $("record").disabled = false;
  }
  choose(null, "");
  $("file").value = "";
  const webm = ["audio/webm;codecs=opus", "audio/webm"]
    .find((type) => MediaRecorder.isTypeSupported(type));
  recorder = new MediaRecorder(stream, webm ? {mimeType: webm} : {});
  const chunks = [], name = recordingName(new Date()), started = Date.now();
  recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
  const tick = () => {
    $("recording").textContent = `Recording… ${Math.floor((Date.now() - started) / 1000)} s`;
  };
  tick();
  const timer = setInterval(tick, 1000);
  recorder.onstop = (event) => {
    clearInterval(timer);
    stream.getTracks().forEach((track) => track.stop());
    const type = (event.target.mimeType || webm || "audio/webm").split(";")[0];
    const suffix = type === "audio/mp4" ? "m4a" : type.split("/")[1] || "webm";
    const discarded = event.target.discarded;
    recorder = null;
    $("record").textContent = "Record"; $("record").classList.remove("on");
    $("recording").textContent = "";
    const file = new File(chunks, `${name}.${suffix}`, {type});
    if (discarded) return;  // a file was picked while recording
    if (!file.size) { setStatus("Error: the recording is empty.", "error"); return; }
    choose(file, file.name);
  };
  recorder.start(1000);
  $("record").textContent = "Stop"; $("record").classList.add("on");
}

if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder) {
  $("record").onclick = () => (recorder ? recorder.stop() : startRecording());
} else {
  $("record").disabled = true;
  $("recording").textContent = "needs HTTPS (or localhost) and a browser that records";
}

// ------------------------------------------------------------------ setup
$("file").onchange = () => {
  const file = $("file").files[0] || null;
  if (recorder) { recorder.discarded = true; recorder.stop(); }
  choose(file, file ? file.name : "");
};
$("srt").onclick = () => download("srt");
$("vtt").onclick = () => download("vtt");
$("txt").onclick = () => download("txt");
$("transcript").onclick = (event) => {
  const word = event.target.closest(".word");
  if (word) seek(Number(word.dataset.start));
};
for (const id of config.models || [config.model]) $("model").add(new Option(id, id));
$("model").value = config.model;
if ((config.models || []).length > 1) {
  document.querySelectorAll(".models").forEach((element) => { element.hidden = false; });
}
$("model").onchange = () => { $("model-name").textContent = $("model").value; };
try {
  $("key").value = sessionStorage.getItem(KEY) || "";
  $("key").oninput = () => {
    if ($("key").value) sessionStorage.setItem(KEY, $("key").value);
    else sessionStorage.removeItem(KEY);
  };
} catch (ignored) { /* storage disabled: the key is typed for each visit */ }
</script>
</body>
</html>
"""
