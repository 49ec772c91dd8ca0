// The console's only script: live refresh of marked regions, confirmations, copy, and the playground.
"use strict";

// Elements with data-refresh="URL" are replaced by that URL's HTML every data-every ms.
function startRefresh(el) {
  const every = Number(el.dataset.every || 2000);
  const tick = async () => {
    try {
      const resp = await fetch(el.dataset.refresh, { credentials: "same-origin" });
      if (resp.status === 401) { window.location.reload(); return; }
      if (resp.ok) el.innerHTML = await resp.text();
    } catch (e) { /* offline for a moment: try again at the next tick */ }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const text = document.querySelector(button.dataset.copy).textContent;
  try { await navigator.clipboard.writeText(text); button.textContent = "Copied"; }
  catch (e) { window.getSelection().selectAllChildren(document.querySelector(button.dataset.copy)); button.textContent = "Press Ctrl+C"; }
});

function newConversation() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return "console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function addMessage(list, role, text) {
  const li = document.createElement("li");
  li.className = "msg " + role;
  li.textContent = text;
  list.appendChild(li);
  return li;
}

// Reads an OpenAI server-sent event stream, calling onEvent with each decoded `data:` object.
async function readEvents(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ") && line !== "data: [DONE]") onEvent(JSON.parse(line.slice(6)));
      }
    }
  }
}

function startPlayground(pg) {
  const $ = (id) => document.getElementById(id);
  let conversation = newConversation();
  let history = [];
  $("pg-session").textContent = conversation;
  $("pg-new").addEventListener("click", () => {
    conversation = newConversation();
    history = [];
    $("pg-session").textContent = conversation;
    $("pg-messages").innerHTML = "";
  });
  $("pg-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("pg-input").value.trim();
    if (!text) return;
    $("pg-input").value = "";
    $("pg-error").hidden = true;
    history.push({ role: "user", content: text });
    addMessage($("pg-messages"), "user", text);
    const answer = addMessage($("pg-messages"), "assistant", "");
    $("pg-send").disabled = true;
    const started = performance.now();
    let first = null;
    try {
      const resp = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { Authorization: "Bearer " + pg.dataset.key, "Content-Type": "application/json",
                   "X-Inventiv-Session": conversation },
        body: JSON.stringify({ model: $("pg-model").value, messages: history, stream: true,
                               stream_options: { include_usage: true } }),
      });
      $("pg-instance").textContent = resp.headers.get("X-Inventiv-Instance") || "-";
      if (!resp.ok) {
        const body = await resp.json().catch(() => ({}));
        throw new Error((body.error && body.error.message) || resp.statusText);
      }
      await readEvents(resp, (chunk) => {
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          if (first === null) { first = performance.now(); $("pg-ttft").textContent = Math.round(first - started) + " ms"; }
          answer.textContent += delta.content;
        }
        if (chunk.usage) {
          $("pg-tokens").textContent = chunk.usage.prompt_tokens + " in, " + chunk.usage.completion_tokens + " out";
        }
      });
      history.push({ role: "assistant", content: answer.textContent });
      answer.classList.add("done");
    } catch (e) {
      history.pop();
      answer.remove();
      $("pg-error").textContent = e.message;
      $("pg-error").hidden = false;
    } finally {
      $("pg-send").disabled = false;
    }
  });
}

// The deployment form: zones where the chosen type is not available cannot be picked (the API would refuse).
function startZonePicker(typeSelect, zoneSelect) {
  const update = () => {
    const chosen = typeSelect.selectedOptions[0];
    const zones = chosen && chosen.dataset.zones !== undefined ? chosen.dataset.zones.split(" ") : null;
    for (const option of zoneSelect.options) {
      if (!option.value) continue;
      const off = zones !== null && !zones.includes(option.value);
      option.disabled = off;
      option.textContent = option.dataset.label + (off ? " — not available for this type" : "");
    }
  };
  for (const option of zoneSelect.options) option.dataset.label = option.textContent;
  typeSelect.addEventListener("change", update);
  update();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(startRefresh);
  const types = document.getElementById("instance_type_id");
  if (types) startZonePicker(types, document.getElementById("zone_id"));
  const pg = document.getElementById("playground");
  if (pg) startPlayground(pg);
});
