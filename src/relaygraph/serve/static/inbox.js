// relaygraph review inbox: progressive enhancement only; every page works without it.
// Live waiting count, stale cards, client-side checks that mirror the server's, shortcuts.
(function () {
  "use strict";
  const body = document.body;
  const base = body.dataset.base || "/inbox";
  const page = body.dataset.page || "";

  // ---------------------------------------------------------------- live count
  const badge = document.getElementById("waiting-count");
  function cardsOnPage() {
    return Array.from(document.querySelectorAll(".card[data-card]"));
  }
  async function refreshCount() {
    const cards = cardsOnPage().filter(c => !c.classList.contains("stale"));
    // each card is percent-encoded, so thread ids may hold commas and colons
    const ids = cards.map(c => encodeURIComponent(c.dataset.card)).join(",");
    let resp;
    try {
      resp = await fetch(base + "/count" + (ids ? "?cards=" + encodeURIComponent(ids) : ""),
                         {headers: {"Accept": "application/json"}, credentials: "same-origin"});
    } catch (e) { return; }
    if (!resp.ok) return;
    const data = await resp.json();
    if (badge) badge.textContent = String(data.waiting);
    const listCount = document.getElementById("list-count");
    if (listCount) listCount.textContent = String(data.waiting);
    if (page === "inbox") document.title = document.title.replace(/\(\d+\)/, "(" + data.waiting + ")");
    const gone = new Set(data.gone || []);
    for (const card of cards) {
      if (gone.has(card.dataset.card)) {
        card.classList.add("stale");
        const note = card.querySelector(".stale-note");
        if (note) note.hidden = false;
      }
    }
  }
  if (badge) {
    const every = Math.max(3, parseInt(body.dataset.refresh || "15", 10)) * 1000;
    if (page !== "inbox") refreshCount();
    setInterval(() => { if (!document.hidden) refreshCount(); }, every);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshCount(); });
  }

  // ---------------------------------------------------------------- filters
  const filters = document.getElementById("filters");
  if (filters) {
    filters.querySelectorAll("select").forEach(s => s.addEventListener("change", () => {
      // empty selects stay out of the URL
      filters.querySelectorAll("select").forEach(x => { x.disabled = x.value === ""; });
      filters.submit();
    }));
  }

  // ---------------------------------------------------------------- validation
  const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)$/;
  const INTEGER = /^[+-]?\d+$/;
  function problem(el) {
    const kind = el.dataset.kind;
    let v = el.value;
    const text = kind === "text" || kind === "textarea" || kind === "json" ? v : v.trim();
    if (!text.trim()) {
      if (el.dataset.nullable) return "";
      if ((kind === "text" || kind === "textarea") && !el.dataset.required) return "";
      if (kind === "enum" || kind === "boolean") return el.dataset.original ? "choose a value" : "";
      return "a value is required";
    }
    const num = x => parseFloat(x);
    function bounds(x) {
      const d = el.dataset;
      if (d.min !== undefined && x < num(d.min)) return "must be at least " + d.min;
      if (d.max !== undefined && x > num(d.max)) return "must be at most " + d.max;
      if (d.xmin !== undefined && x <= num(d.xmin)) return "must be greater than " + d.xmin;
      if (d.xmax !== undefined && x >= num(d.xmax)) return "must be less than " + d.xmax;
      return "";
    }
    if (kind === "decimal") {
      if (!DECIMAL.test(text)) return "enter a decimal number such as 12.40, not '" + text.slice(0, 40) + "'";
      return bounds(num(text));
    }
    if (kind === "integer") {
      if (!INTEGER.test(text)) return "enter a whole number, not '" + text.slice(0, 40) + "'";
      return bounds(num(text));
    }
    if (kind === "number") {
      const x = Number(text);
      if (!isFinite(x)) return "enter a number, not '" + text.slice(0, 40) + "'";
      return bounds(x);
    }
    if (kind === "date") {
      if (!/^\d{4}-\d{2}-\d{2}$/.test(text) || isNaN(Date.parse(text + "T00:00:00Z")))
        return "enter a date as YYYY-MM-DD";
      return "";
    }
    if (kind === "json") {
      try { JSON.parse(text); } catch (e) { return "not valid JSON: " + e.message; }
      return "";
    }
    if (kind === "text" || kind === "textarea") {
      const d = el.dataset;
      if (d.minlen !== undefined && text.length < parseInt(d.minlen, 10)) return "must be at least " + d.minlen + " characters";
      if (d.maxlen !== undefined && text.length > parseInt(d.maxlen, 10)) return "must be at most " + d.maxlen + " characters";
      if (d.pattern) { try { if (!new RegExp(d.pattern, "u").test(text)) return "does not match the expected format"; } catch (e) { /* server checks */ } }
    }
    return "";
  }
  function showProblem(el, msg) {
    const field = el.closest(".field");
    const out = document.getElementById("err-" + (field ? field.dataset.field : ""));
    if (field) field.classList.toggle("invalid", !!msg);
    if (out) { out.textContent = msg; out.hidden = !msg; }
    el.setAttribute("aria-invalid", msg ? "true" : "false");
  }

  const form = document.getElementById("decide");
  const inputs = form ? Array.from(form.querySelectorAll("[data-kind]")) : [];
  const approve = document.getElementById("btn-approve");
  const approveLabel = approve ? approve.firstChild.textContent : "";
  function changedCount() {
    let n = 0;
    for (const el of inputs) {
      const changed = el.value !== (el.dataset.original || "");
      const field = el.closest(".field");
      if (field) field.classList.toggle("changed", changed);
      if (changed) n++;
    }
    if (approve && approveLabel.trim() === "Approve")
      approve.firstChild.textContent = n ? "Approve with " + n + " edit" + (n > 1 ? "s" : "") + " " : approveLabel;
    return n;
  }
  if (form) {
    for (const el of inputs) {
      el.addEventListener("input", () => { showProblem(el, problem(el)); changedCount(); });
      el.addEventListener("change", () => { showProblem(el, problem(el)); changedCount(); });
    }
    // one decision per page: a second click or key press before the page has left would
    // reach the server after the first and come back as a "moved on" 409
    let sent = false;
    window.addEventListener("pageshow", () => {
      sent = false;
      form.querySelectorAll("button[type=submit]").forEach(b => { b.disabled = false; });
    });
    form.addEventListener("submit", (ev) => {
      if (sent) { ev.preventDefault(); return; }
      const action = ev.submitter ? ev.submitter.value : "approve";
      if (action === "reject") {
        const reason = document.getElementById("reason");
        const err = document.getElementById("err-reason");
        if (reason && !reason.value.trim()) {
          ev.preventDefault();
          if (err) { err.textContent = "say why you reject it: the agent gets this as feedback"; err.hidden = false; }
          reason.focus();
          return;
        }
        sent = true;
        return;
      }
      let first = null;
      for (const el of inputs) {
        const msg = problem(el);
        showProblem(el, msg);
        if (msg && !first) first = el;
      }
      if (first) { ev.preventDefault(); first.focus(); return; }
      if (ev.submitter && ev.submitter.id === "btn-edit" && changedCount() === 0) {
        ev.preventDefault();
        const f = inputs.find(el => !el.readOnly && !el.disabled);
        if (f) f.focus();
        return;  // nothing was sent: the buttons stay usable
      }
      sent = true;
      form.querySelectorAll("button[type=submit]").forEach(b => { setTimeout(() => { b.disabled = true; }, 0); });
    });
    changedCount();
  }
  // a reconcile conflict: picking a candidate (its radio, or "use this" in the table) fills the input
  document.querySelectorAll("input[type=radio][data-fill-target]").forEach(radio => {
    radio.addEventListener("change", () => {
      const target = document.getElementById(radio.dataset.fillTarget);
      if (!target || !radio.checked) return;
      target.value = radio.dataset.fill || "";
      target.dispatchEvent(new Event("input", { bubbles: true }));
    });
  });
  document.querySelectorAll("button.use[data-fill-pick]").forEach(btn => {
    btn.addEventListener("click", () => {
      const radio = document.getElementById(btn.dataset.fillPick);
      if (!radio) return;
      radio.checked = true;
      radio.dispatchEvent(new Event("change", { bubbles: true }));
      const target = document.getElementById(radio.dataset.fillTarget);
      if (target) target.focus();
    });
  });

  // ---------------------------------------------------------------- provenance links
  document.querySelectorAll(".facts tr").forEach(row => {
    row.addEventListener("click", () => {
      const name = row.querySelector("td") ? row.querySelector("td").textContent : "";
      const mark = Array.from(document.querySelectorAll("mark.prov[data-field]")).find(m => m.dataset.field === name);
      if (mark) { mark.scrollIntoView({block: "center"}); mark.classList.add("flash"); setTimeout(() => mark.classList.remove("flash"), 1200); }
    });
  });

  // ---------------------------------------------------------------- keyboard
  function typing(t) {
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }
  function moveSelection(items, delta) {
    if (!items.length) return null;
    let i = items.findIndex(x => x.classList.contains("selected"));
    if (i >= 0) items[i].classList.remove("selected");
    i = i < 0 ? (delta > 0 ? 0 : items.length - 1) : Math.min(items.length - 1, Math.max(0, i + delta));
    items[i].classList.add("selected");
    items[i].focus({preventScroll: true});
    items[i].scrollIntoView({block: "nearest"});
    return items[i];
  }
  function toggleHelp() {
    const open = document.querySelector(".help-overlay");
    if (open) { open.remove(); return; }
    const div = document.createElement("div");
    div.className = "help-overlay";
    const panel = document.createElement("div");
    panel.className = "panel";
    const rows = [["j / k", "next / previous"], ["Enter", "open the selected review"], ["a", "approve (with your edits, if any)"],
                  ["e", "edit: jump to the first field"], ["r", "reject: type a reason, press r again to send"], ["Esc", "leave a field"], ["?", "this help"]];
    const h = document.createElement("h2"); h.textContent = "Keyboard shortcuts"; panel.appendChild(h);
    for (const [k, what] of rows) {
      const p = document.createElement("p"); const kbd = document.createElement("kbd"); kbd.textContent = k;
      p.appendChild(kbd); p.appendChild(document.createTextNode(" " + what)); panel.appendChild(p);
    }
    div.appendChild(panel);
    div.addEventListener("click", () => div.remove());
    document.body.appendChild(div);
  }
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "Escape") { if (typing(ev.target)) ev.target.blur(); const o = document.querySelector(".help-overlay"); if (o) o.remove(); return; }
    if (typing(ev.target)) return;
    const key = ev.key;
    if (key === "?") { toggleHelp(); return; }
    if (page === "inbox") {
      const cards = cardsOnPage();
      if (key === "j" || key === "k") { ev.preventDefault(); moveSelection(cards, key === "j" ? 1 : -1); }
      else if (key === "Enter") { const sel = cards.find(c => c.classList.contains("selected")); if (sel) window.location.href = sel.dataset.href; }
    } else if (page === "review") {
      if (key === "j" || key === "k") {
        const link = document.getElementById(key === "j" ? "next-review" : "prev-review");
        if (link) window.location.href = link.href;
      } else if (key === "a" && approve) { ev.preventDefault(); form.requestSubmit(approve); }
      else if (key === "e") {
        const f = inputs.find(el => !el.readOnly && !el.disabled);
        if (f) { ev.preventDefault(); f.focus(); if (f.select) f.select(); }
      } else if (key === "r") {
        const reason = document.getElementById("reason");
        const reject = document.getElementById("btn-reject");
        if (!reason || !reject) return;
        ev.preventDefault();
        if (reason.value.trim()) form.requestSubmit(reject); else reason.focus();
      }
    } else if (page === "timeline") {
      if (key === "j" || key === "k") { ev.preventDefault(); moveSelection(Array.from(document.querySelectorAll(".step")), key === "j" ? 1 : -1); }
    }
  });
})();
