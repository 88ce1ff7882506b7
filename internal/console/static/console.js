// Warren console: the only script, served from the binary (the Content
// Security Policy allows no other). Pages work without it; it adds live
// node presence and puts the policy editor's cursor on the first error.
"use strict";

function live(url) {
  const es = new EventSource(url);
  es.addEventListener("nodes", (ev) => {
    const nodes = JSON.parse(ev.data);
    const rows = document.querySelectorAll("[data-node]");
    const shown = new Set();
    rows.forEach((r) => shown.add(r.dataset.node));
    const onPage = document.getElementById("nodes");
    if (onPage && (nodes.length !== shown.size || nodes.some((n) => !shown.has(String(n.id))))) {
      location.reload(); // a node joined or left: the server renders the new list
      return;
    }
    for (const n of nodes) {
      document.querySelectorAll('[data-node="' + n.id + '"]').forEach((r) => {
        const on = r.querySelector(".online");
        if (on) {
          on.textContent = n.online ? "online" : "offline";
          on.className = "online " + (n.online ? "yes" : "no");
        }
        const seen = r.querySelector(".lastseen");
        if (seen) seen.textContent = n.last_seen;
      });
    }
    document.body.dataset.liveEvents = String(Number(document.body.dataset.liveEvents || 0) + 1);
  });
}

function cursorToError(ta) {
  const line = Number(ta.dataset.line), col = Number(ta.dataset.column || 1);
  const lines = ta.value.split("\n");
  let pos = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) pos += lines[i].length + 1;
  const end = pos + (lines[line - 1] || "").length;
  ta.focus();
  ta.setSelectionRange(Math.min(pos + col - 1, end), end);
  const lh = ta.scrollHeight / Math.max(lines.length, 1);
  ta.scrollTop = Math.max(0, (line - 3) * lh);
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.live) live(document.body.dataset.live);
  const ta = document.getElementById("policy");
  if (ta && ta.dataset.line) cursorToError(ta);
});
