// The playground: submit a job, follow its WebSocket stream, show progress, previews and the result.
"use strict";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["completed", "failed", "cancelled", "timed_out"]);
const FIELDS = ["prompt", "negative_prompt", "width", "height", "steps", "guidance", "seed", "sampler"];

function key() { return $("key").value.trim(); }
function auth() { return { Authorization: `Bearer ${key()}` }; }

function requestBody() {
  const body = {
    prompt: $("prompt").value,
    width: Number($("width").value),
    height: Number($("height").value),
    steps: Number($("steps").value),
    guidance: Number($("guidance").value),
    sampler: $("sampler").value,
    preview: $("preview").checked,
  };
  if ($("negative_prompt").value) body.negative_prompt = $("negative_prompt").value;
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  return body;
}

function showCode() {
  const json = JSON.stringify(requestBody());
  const base = location.origin;
  $("curl").textContent =
    `curl -s -X POST ${base}/v1/jobs \\\n  -H "Authorization: Bearer $EASEL_KEY" -H 'content-type: application/json' \\\n` +
    `  -d '${json.replace(/'/g, "'\\''")}'\n\n# then follow it live (Server-Sent Events):\ncurl -N ${base}/v1/jobs/$ID/events -H "Authorization: Bearer $EASEL_KEY"`;
  $("python").textContent =
    `import os, httpx\n\nheaders = {"Authorization": f"Bearer {os.environ['EASEL_KEY']}"}\n` +
    `job = httpx.post("${base}/v1/jobs", headers=headers, json=${JSON.stringify(requestBody(), null, 4).replace(/true/g, "True").replace(/false/g, "False")}).json()\n` +
    `done = httpx.get(job["links"]["self"], params={"wait": 60}, headers=headers, timeout=70).json()\n` +
    `open("out.png", "wb").write(httpx.get(done["outputs"][0]["url"], headers=headers).content)`;
}

function setState(state, text) {
  $("state").dataset.state = state;
  $("state").textContent = text || state;
}

async function showImage(img, url) {
  const response = await fetch(url, { headers: auth() });
  if (!response.ok) throw new Error(`image: HTTP ${response.status}`);
  img.src = URL.createObjectURL(await response.blob());
  img.dataset.loaded = "true";
}

function onEvent(event) {
  const data = event.data || {};
  switch (event.type) {
    case "queued":
      setState("queued", `queued (position ${data.queue_position ?? "?"})`);
      break;
    case "started":
      setState("started", "generating");
      break;
    case "progress":
      $("bar").value = data.fraction;
      $("bar").dataset.step = data.step;
      $("stats").textContent = `step ${data.step}/${data.total} · ${data.it_per_s} it/s · eta ${data.eta_s.toFixed(1)} s`;
      break;
    case "preview":
      $("preview-image").src = `data:${data.content_type};base64,${data.image}`;
      $("preview-image").dataset.step = data.step;
      break;
    case "completed":
      $("bar").value = 1;
      setState("completed");
      showImage($("result"), data.outputs[0].url).catch((e) => ($("error").textContent = e.message));
      break;
    default:
      if (TERMINAL.has(event.type)) {
        setState(event.type);
        $("error").textContent = data.error || event.type;
      }
  }
}

// Follows one job; on a dropped connection, reconnects with since=<last seq> so nothing is missed.
function follow(jobId, attempt = 0, since = -1) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const params = `since=${since}&previews=${$("preview").checked}`;
  const ws = new WebSocket(`${scheme}://${location.host}/v1/jobs/${encodeURIComponent(jobId)}/stream?${params}`);
  let last = since;
  let ended = false;
  ws.onopen = () => ws.send(JSON.stringify({ key: key() }));  // the key as first message, not in the URL
  ws.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "error") { $("error").textContent = event.message; ended = true; return; }
    last = event.seq;
    onEvent(event);
    if (TERMINAL.has(event.type)) { ended = true; loadRecent(); }
  };
  ws.onclose = () => {
    if (!ended && attempt < 5) setTimeout(() => follow(jobId, attempt + 1, last), 1000);
  };
}

async function submit(e) {
  e.preventDefault();
  localStorage.setItem("easel-key", key());
  $("error").textContent = "";
  $("bar").value = 0;
  $("stats").textContent = "";
  for (const img of [$("preview-image"), $("result")]) { img.removeAttribute("src"); delete img.dataset.loaded; }
  setState("submitting", "submitting…");
  const response = await fetch("/v1/jobs", {
    method: "POST",
    headers: { ...auth(), "content-type": "application/json" },
    body: JSON.stringify(requestBody()),
  });
  const body = await response.json();
  if (!response.ok) {
    setState("error", "refused");
    $("error").textContent = body.error ? body.error.message : `HTTP ${response.status}`;
    return;
  }
  $("run").dataset.jobId = body.id;
  setState("queued");
  follow(body.id);
}

async function loadRecent() {
  if (!key()) return;
  const response = await fetch("/v1/jobs?limit=10", { headers: auth() });
  if (!response.ok) return;
  const { jobs } = await response.json();
  const list = $("recent");
  list.replaceChildren(...jobs.map((job) => {
    const li = document.createElement("li");
    li.dataset.jobId = job.id;
    const state = document.createElement("span");
    state.className = "state";
    state.textContent = job.status;
    li.append(state, `${job.prompt || ""} · ${job.id.slice(0, 8)}`);
    li.onclick = () => {
      if (job.outputs.length) showImage($("result"), job.outputs[0].url).catch(() => {});
      else follow(job.id);
    };
    return li;
  }));
}

$("key").value = localStorage.getItem("easel-key") || "";
$("form").addEventListener("submit", submit);
$("refresh").addEventListener("click", loadRecent);
$("key").addEventListener("change", loadRecent);
for (const id of [...FIELDS, "preview"]) $(id).addEventListener("input", showCode);
showCode();
loadRecent();
