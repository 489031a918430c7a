"""`GET /`: a small page to try the server in a browser (no build step, no external assets)."""

PAGE = """<!doctype html>
<html lang="ko">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>voxadapt: {{MODEL}}</title>
<style>
  body { font-family: system-ui, "Apple SD Gothic Neo", "Malgun Gothic", "Noto Sans KR",
         "Noto Sans CJK KR", "NanumGothic", sans-serif; max-width: 52rem; margin: 2rem auto;
         padding: 0 1rem; color: #1b1f24; }
  h1 { font-size: 1.3rem; } .muted { color: #5b6570; font-size: .9rem; }
  form { display: grid; gap: .6rem; grid-template-columns: 10rem 1fr; align-items: center; }
  button { padding: .4rem 1rem; } #status { min-height: 1.2rem; }
  #transcript { font-size: 1.15rem; line-height: 1.6; white-space: pre-wrap;
                border-left: 4px solid #2f6fdb; padding-left: .8rem; }
  table { border-collapse: collapse; width: 100%; margin-top: 1rem; }
  td, th { border-bottom: 1px solid #d8dde3; padding: .3rem .5rem; text-align: left; }
  td.time { font-variant-numeric: tabular-nums; white-space: nowrap; color: #5b6570; }
</style>
</head>
<body>
<h1>voxadapt · <span id="model">{{MODEL}}</span></h1>
<p class="muted">Audio is sent to this server only and is not kept after the answer.</p>
<form id="form">
  <label for="file">Audio file</label><input id="file" name="file" type="file" accept="audio/*">
  <label for="language">Language</label><input id="language" name="language" value="ko">
  <label for="hotwords">Hotwords</label>
  <input id="hotwords" name="hotwords" placeholder="고혈압, CT|씨티">
  <label for="key">API key</label><input id="key" type="password" autocomplete="off">
  <span></span><button id="send" type="submit">Transcribe</button>
</form>
<p id="status" role="status"></p>
<div id="transcript"></div>
<table id="segments" hidden><thead><tr><th>start</th><th>end</th><th>text</th></tr></thead>
<tbody></tbody></table>
<p id="downloads" hidden>
  <button id="srt" type="button">Download SRT</button>
  <button id="vtt" type="button">Download VTT</button>
</p>
<script>
const $ = (id) => document.getElementById(id);
let result = null;
function stamp(seconds, sep) {
  let ms = Math.round(seconds * 1000);
  const h = Math.floor(ms / 3600000); ms -= h * 3600000;
  const m = Math.floor(ms / 60000); ms -= m * 60000;
  const s = Math.floor(ms / 1000); ms -= s * 1000;
  const two = (n) => String(n).padStart(2, "0");
  return `${two(h)}:${two(m)}:${two(s)}${sep}${String(ms).padStart(3, "0")}`;
}
function cues(format) {
  const parts = result.segments.filter((s) => s.text);
  if (format === "vtt") {
    return "WEBVTT\\n\\n" + parts.map((s) =>
      `${stamp(s.start, ".")} --> ${stamp(s.end, ".")}\\n${s.text}\\n\\n`).join("");
  }
  return parts.map((s, i) =>
    `${i + 1}\\n${stamp(s.start, ",")} --> ${stamp(s.end, ",")}\\n${s.text}\\n`).join("\\n");
}
function download(format) {
  const blob = new Blob([cues(format)], {type: "text/plain;charset=utf-8"});
  const link = document.createElement("a");
  const name = ($("file").files[0]?.name || "audio").replace(/\\.[^.]+$/, "");
  link.href = URL.createObjectURL(blob); link.download = `${name}.${format}`; link.click();
}
$("srt").onclick = () => download("srt");
$("vtt").onclick = () => download("vtt");
$("form").onsubmit = async (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) { $("status").textContent = "Choose an audio file first."; return; }
  const body = new FormData();
  body.append("file", file);
  body.append("model", $("model").textContent);
  body.append("language", $("language").value || "ko");
  body.append("response_format", "verbose_json");
  if ($("hotwords").value) body.append("hotwords", $("hotwords").value);
  const headers = $("key").value ? {Authorization: `Bearer ${$("key").value}`} : {};
  $("status").textContent = "Transcribing…"; $("send").disabled = true;
  try {
    const response = await fetch("/v1/audio/transcriptions", {method: "POST", body, headers});
    const data = await response.json();
    if (!response.ok) throw new Error(data.error ? data.error.message : response.statusText);
    result = data;
    $("transcript").textContent = data.text;
    const rows = $("segments").querySelector("tbody"); rows.replaceChildren();
    for (const s of data.segments) {
      const row = rows.insertRow();
      row.insertCell().textContent = stamp(s.start, "."); row.cells[0].className = "time";
      row.insertCell().textContent = stamp(s.end, "."); row.cells[1].className = "time";
      row.insertCell().textContent = s.text;
    }
    $("segments").hidden = false; $("downloads").hidden = false;
    const count = data.segments.length;
    $("status").textContent = `${data.duration.toFixed(1)} s of audio, ${count} segment(s).`;
  } catch (error) {
    $("status").textContent = `Error: ${error.message}`;
  } finally { $("send").disabled = false; }
};
</script>
</body>
</html>
"""
