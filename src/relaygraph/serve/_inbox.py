"""The review inbox page: server-rendered HTML with a little inline JavaScript, no CDN."""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222}
h1{font-size:1.4rem} .empty{color:#666}
.card{border:1px solid #ccc;border-radius:6px;padding:1rem;margin:1rem 0}
.meta{color:#555;font-size:.85rem} pre{background:#f6f6f6;padding:.6rem;overflow:auto}
textarea,input{width:100%;box-sizing:border-box;margin:.2rem 0;font:inherit}
button{margin-right:.5rem;padding:.3rem .9rem} .err{color:#b00;white-space:pre-wrap}
.ok{color:#070} dl{display:grid;grid-template-columns:10rem 1fr;margin:.5rem 0}
dt{color:#555} dd{margin:0}
"""

_SCRIPT = """
async function decide(button, action) {
  const card = button.closest('.card');
  const out = card.querySelector('.result');
  const body = {action: action,
                reviewer: card.querySelector('[name=reviewer]').value || null,
                comment: card.querySelector('[name=comment]').value || null};
  if (action === 'edit') {
    try { body.edits = JSON.parse(card.querySelector('[name=edits]').value || '{}'); }
    catch (e) { out.className = 'result err'; out.textContent = 'edits: ' + e; return; }
  }
  let url = 'reviews/' + encodeURIComponent(card.dataset.thread);
  if (card.dataset.interrupt) url += '?interrupt_id=' + encodeURIComponent(card.dataset.interrupt);
  const resp = await fetch(url, {
    method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  const data = await resp.json().catch(() => ({}));
  if (resp.ok) {
    out.className = 'result ok'; out.textContent = action + ' recorded';
    card.querySelectorAll('button').forEach(b => b.disabled = true);
  } else {
    out.className = 'result err';
    out.textContent = resp.status + ': ' + JSON.stringify(data.detail ?? data, null, 2);
  }
}
"""


_FACTS = (("under review", "subject"), ("agent", "agent"), ("contract", "contract"),
          ("confidence", "confidence"), ("guard", "guard_reason"),
          ("failed checks", "failed_checks"), ("why asked", "policy_reason"),
          ("previous answer refused", "error"))


def _card(review: dict[str, Any]) -> str:
    request = review.get("request") or {}
    if isinstance(request, dict):
        shown = request.get("value")
        facts = [(label, request.get(key)) for label, key in _FACTS
                 if request.get(key) not in (None, "", [])]
    else:
        shown, facts = request, []
    facts_html = "".join(f"<dt>{escape(label)}</dt><dd>{escape(str(value))}</dd>"
                         for label, value in facts)
    actions = request.get("actions") if isinstance(request, dict) else None
    actions = actions or ["approve", "edit", "reject"]
    buttons = "".join(
        f'<button type="button" onclick="decide(this, {escape(json.dumps(a))})">'
        f"{escape(a.capitalize())}</button>"
        for a in actions if a in ("approve", "edit", "reject"))
    edits = ('<label>edits (JSON, for Edit)<textarea name="edits" rows="2">{}</textarea>'
             "</label>") if "edit" in actions else ""
    hint = ('<div class="meta">Reject uses the comment as its reason.</div>'
            if "reject" in actions else "")
    return (
        f'<div class="card" data-thread="{escape(str(review["thread_id"]))}" '
        f'data-interrupt="{escape(str(review.get("interrupt_id") or ""))}">'
        f'<div class="meta">thread <b>{escape(str(review["thread_id"]))}</b> · graph '
        f'{escape(str(review.get("graph_id") or "-"))} · '
        f'{escape(str(review.get("updated_at") or ""))} · '
        f'<a href="threads/{quote(str(review["thread_id"]), safe="")}/timeline">timeline</a>'
        f"</div>"
        f"<dl>{facts_html}</dl>"
        f"<pre>{escape(json.dumps(shown, indent=2, default=str))}</pre>"
        f'<label>reviewer<input name="reviewer"></label>'
        f'<label>comment<input name="comment"></label>{edits}'
        f'{hint}<div>{buttons}</div><div class="result"></div></div>'
    )


def render_inbox(reviews: list[dict[str, Any]], *, title: str = "relaygraph") -> str:
    """The inbox page for a list of pending reviews (as returned by ``GET /reviews``)."""
    cards = "".join(_card(r) for r in reviews) or \
        '<p class="empty">No reviews are waiting.</p>'
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)} · review inbox</title><style>{_STYLE}</style></head><body>"
        f"<h1>Review inbox <small>({len(reviews)} waiting)</small></h1>{cards}"
        f"<script>{_SCRIPT}</script></body></html>"
    )
