"""Generate the handoff benchmark corpus (deterministic: same seed, same bytes).

    python bench/handoff_corpus/generate.py            # writes corpus.json next to this file

Each transcript is a customer-service chat (refund, exchange, billing) or a research
scoping chat, with tool calls and their results, hold messages, policy text and small
talk, and distractors that a careless summary gets wrong: a first order id that was the
wrong one, an email corrected mid-chat, other orders and invoices, shipping and tax
amounts, tracking dates, papers that were dropped. ``facts`` lists the critical facts
(field, value, kind) the handoff contract asks for; the compressor never reads them.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "src"))

from relaygraph.nodes._tokens import approx_tokens, message_text  # noqa: E402

SEED = 20240315
N_SUPPORT = 24
N_RESEARCH = 12

FIRST = ["Maria", "James", "Aisha", "Tomás", "Priya", "Liam", "Chen", "Olivia", "Noah", "Fatima",
         "Lukas", "Sofia", "Kwame", "Emma", "Hiroshi", "Zoe", "Mateo", "Ingrid", "Omar", "Grace"]
LAST = ["Okafor", "Lindqvist", "Hernández", "Patel", "Nguyen", "O'Brien", "Kowalski", "Rossi",
        "Haddad", "Schmidt", "Tanaka", "Dubois", "Mensah", "Novak", "Fischer", "Costa"]
DOMAINS = ["gmail.com", "outlook.com", "proton.me", "yahoo.co.uk", "fastmail.fm", "icloud.com",
           "hey.com", "web.de"]
CATALOG = [
    ("Nimbus 2 Rain Jacket", "JKT", (89, 189), ["S", "M", "L", "XL"]),
    ("TrailRunner GTX Shoes", "SHO", (119, 179), ["41", "42", "43", "44", "45"]),
    ("Arc Lamp Pro", "LMP", (59, 149), ["Black", "Brass"]),
    ("Cascade Espresso Machine", "ESP", (349, 899), ["Steel", "Matte Black"]),
    ("Halo Noise-Cancelling Headphones", "HDP", (149, 329), ["Graphite", "Sand"]),
    ("Merino Crew Sweater", "SWT", (69, 129), ["S", "M", "L"]),
    ("Summit 45L Backpack", "BPK", (129, 219), ["Olive", "Slate"]),
    ("Orbit Smart Thermostat", "THM", (179, 249), ["White"]),
    ("Linen Duvet Cover (King)", "DUV", (99, 179), ["Oat", "Sage", "White"]),
    ("Pulse Fitness Watch", "WCH", (199, 399), ["40mm", "44mm"]),
    ("Ceramic Chef Knife 8in", "KNF", (39, 89), ["Standard"]),
    ("Breeze Tower Fan", "FAN", (79, 139), ["White", "Grey"]),
    ("Drift Memory Foam Pillow", "PLW", (45, 95), ["Standard", "Firm"]),
    ("Vantage 27in 4K Monitor", "MON", (279, 1249), ["27in"]),
]
FILLERS_ITEMS = [("Cotton Socks 3-pack", 14, 22), ("Gift Wrap", 4, 7), ("USB-C Cable 2m", 9, 19),
                 ("Water Bottle 750ml", 18, 32), ("Cleaning Kit", 12, 25)]
CARRIERS = ["UPS", "DHL Express", "FedEx Ground", "Royal Mail Tracked 48", "DPD"]
CITIES = ["Memphis, TN", "Leipzig, DE", "Louisville, KY", "East Midlands, UK", "Rotterdam, NL",
          "Columbus, OH", "Reno, NV", "Lyon, FR"]
ISSUES = {
    "refund": [
        "the {p} stopped working after two days",
        "the {p} arrived with a cracked casing",
        "the {p} is not what the listing showed, the colour is completely different",
        "the {p} arrived damaged, the box was crushed",
        "the {p} has a manufacturing defect, the seam is coming apart",
    ],
    "exchange": [
        "the {p} is too small, I need a bigger size",
        "the {p} runs large and I'd like to swap it",
        "I ordered the wrong variant of the {p}",
    ],
}
PLANS = [("Basic", 9.99, 19.99), ("Plus", 19.99, 34.99), ("Pro", 29.00, 49.00),
         ("Team", 79.00, 129.00), ("Family", 14.99, 24.99)]
BILLING_ISSUES = ["double", "after_cancel", "wrong_plan", "promo"]

POLICY_PARAGRAPHS = [
    "Returns are accepted within 30 days of delivery for unused items in their original "
    "packaging. Items that arrive damaged or defective may be returned at any time within the "
    "warranty period, and the customer is not charged for return shipping.",
    "Refunds are issued to the original payment method. Card refunds usually appear within 5 "
    "to 10 business days, depending on the issuing bank. Store credit is issued immediately "
    "and carries a 10% bonus when chosen instead of a card refund.",
    "Exchanges for a different size or colour are free of charge when the replacement is in "
    "stock. When it is not, the agent may offer a back-order with priority shipping or a "
    "refund. Exchanges are shipped once the return has been scanned by the carrier.",
    "Shipping charges are refundable only when the return is due to our error (wrong item, "
    "damaged, or defective). Express shipping upgrades are never refundable once the parcel "
    "has been dispatched.",
    "For orders paid with gift cards, the refund is returned as a new gift card. Promotional "
    "discounts are prorated across the items of the order; a partial return refunds the "
    "discounted price of the returned items only.",
    "Proof of damage: customers are asked for a photo of the item and of the packaging. The "
    "agent may waive this for orders under the photo threshold or for loyal customers at "
    "their discretion. Photos are attached to the case, not sent by email.",
    "Escalation: cases that need a decision beyond the agent's authority (refunds above the "
    "agent limit, goodwill gestures, repeated failures) are handed to the resolutions team "
    "with a structured summary. The resolutions team replies within one business day.",
    "Billing disputes: duplicate charges are reversed once the payment processor confirms the "
    "duplicate; charges made after a valid cancellation are refunded in full; plan "
    "mismatches are refunded as the difference between the charged and the contracted price.",
    "Data protection: agents never ask for full card numbers, passwords or one-time codes. "
    "Identity is verified with the account email and the last four digits of the phone "
    "number on file.",
    "Warranty: electronics carry a two-year limited warranty covering manufacturing defects. "
    "Accidental damage, water damage and normal wear are excluded. Warranty repairs are "
    "handled by the manufacturer's service partner when a replacement is not available.",
    "Price adjustments: if an item's price drops within 14 days of purchase, the difference "
    "can be refunded once per item on request. Clearance and flash-sale prices are excluded.",
    "International returns: customers outside the domestic area use a prepaid international "
    "label; customs duties paid on the original shipment are refunded only for defective "
    "items with a valid customs receipt.",
    "Bundles: items bought as a bundle are refunded at their share of the bundle price, not "
    "at their individual list price. Free gifts included with a bundle must be returned too.",
    "Subscriptions: cancelling stops the next renewal; access continues until the end of the "
    "paid period. Annual plans cancelled within 14 days are refunded in full.",
    "Goodwill: agents may offer a goodwill voucher for repeated service failures. Vouchers "
    "are single-use, expire after twelve months and cannot be exchanged for cash.",
]
SMALL_TALK = [
    ("human", "Sorry, I'm typing on my phone on the train, so bear with me."),
    ("ai", "No problem at all, take your time."),
    ("human", "Honestly this is the second time something like this happens, I'm a bit "
              "frustrated."),
    ("ai", "I completely understand, and I'm sorry for the hassle. Let's get this sorted."),
    ("human", "Is there a way to get notified when the parcel is picked up?"),
    ("ai", "Yes, you'll get an email with the carrier's tracking link as soon as it's scanned."),
    ("human", "Do I need to print a label or is it a QR code?"),
    ("ai", "It's a QR code; any drop-off point of the carrier can scan it from your phone."),
    ("human", "Thanks. Also your website kept logging me out, not sure if you know."),
    ("ai", "Thanks for flagging that, I'll pass it on to our web team."),
    ("human", "Can I keep the original box or do you need it back?"),
    ("ai", "Please use the original box if you still have it; any sturdy box works otherwise."),
    ("human", "How long does the whole thing usually take?"),
    ("ai", "Usually a few days once the carrier scans the parcel, but I'll confirm the exact "
           "timing in a moment."),
    ("human", "ok"),
    ("ai", "Thanks for your patience — I'm still with you, just checking a couple of things."),
    ("human", "Will I get a confirmation email for this?"),
    ("ai", "Yes, a confirmation goes out as soon as the case is created, with the case number."),
    ("human", "My neighbour bought the same thing and had no issues, so annoying."),
    ("ai", "That's frustrating, I'm sorry. Let's make sure you end up with one that works."),
    ("human", "Can you also update my phone number? It ends in 0142 now."),
    ("ai", "For security I can't change contact details in chat, but you can do it under "
           "Account > Profile in a minute."),
    ("human", "Is the store in the city centre able to do this instead?"),
    ("ai", "Stores can accept returns, but exchanges for online orders are faster through us."),
    ("human", "Do you have a loyalty programme? I order quite a lot."),
    ("ai", "We do — you'd earn points on every order. I can send you the sign-up link by "
           "email afterwards."),
    ("human", "sorry, dog was barking. where were we"),
    ("ai", "No worries! I was just looking into your order details."),
    ("human", "What happens if the carrier loses the return parcel?"),
    ("ai", "Returns are insured; if the carrier loses it, we still complete your case."),
    ("human", "I don't have a printer at home, is that a problem?"),
    ("ai", "Not at all, the QR code works from your phone at the drop-off point."),
]
HOLDS = [
    "Thanks for waiting, I'm still checking the details with the system.",
    "One moment please, the order system is a bit slow today.",
    "Still here! Just confirming a couple of things with the warehouse.",
    "Bear with me for another minute, I'm reading the case notes.",
    "Apologies for the wait — I'm double-checking the policy for your case.",
]


def money(x: Decimal) -> str:
    return f"${x:,.2f}"


def q2(x: float | Decimal) -> Decimal:
    return Decimal(str(x)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def prose_date(d: date, rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 0:
        return d.strftime("%B ") + str(d.day) + d.strftime(", %Y")
    if style == 1:
        return str(d.day) + d.strftime(" %B %Y")
    if style == 2:
        return d.strftime("%b. ") + str(d.day) + d.strftime(", %Y")
    return d.strftime("%m/%d/%Y")


class Chat:
    """Accumulates messages in the corpus' JSON form."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.messages: list[dict[str, Any]] = []
        self._n = 0

    def human(self, text: str) -> None:
        self.messages.append({"role": "human", "content": text})

    def ai(self, text: str) -> None:
        self.messages.append({"role": "ai", "content": text})

    def tool(self, name: str, args: dict[str, Any], result: Any, say: str = "") -> None:
        self._n += 1
        call_id = f"call_{self._n:03d}"
        self.messages.append({"role": "ai", "content": say,
                              "tool_calls": [{"name": name, "args": args, "id": call_id}]})
        content = result if isinstance(result, str) else json.dumps(result, indent=None)
        self.messages.append({"role": "tool", "name": name, "tool_call_id": call_id,
                              "content": content})

    def tokens(self) -> int:
        return sum(approx_tokens(message_text(m)) + 4 for m in self.messages)


def person(rng: random.Random) -> tuple[str, str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}{rng.randint(1, 99)}",
                        f"{last}.{first[0]}"]).lower()
    local = "".join(ch for ch in local if ch.isalnum() or ch == ".")
    local = local.replace("á", "a").replace("é", "e").replace("í", "i")
    return first, last, f"{local}@{rng.choice(DOMAINS)}"


def typo(email: str, rng: random.Random) -> str:
    local, domain = email.split("@")
    i = rng.randrange(1, len(local) - 1)
    chars = list(local)
    chars[i], chars[i + 1 if i + 1 < len(chars) else i - 1] = (
        chars[i + 1 if i + 1 < len(chars) else i - 1], chars[i])
    out = "".join(chars) + "@" + domain
    return out if out != email else local + "x@" + domain


def order_id(rng: random.Random) -> str:
    return rng.choice(["A-", "ORD-", "W", "SO-"]) + str(rng.randint(10000, 9999999))


def make_order(rng: random.Random, oid: str, placed: date, name: str, email: str,
               main: tuple[str, str, tuple[int, int], list[str]] | None = None) -> dict[str, Any]:
    items = []
    prod = main or rng.choice(CATALOG)
    variant = rng.choice(prod[3])
    price = q2(rng.randint(*prod[2]) + rng.choice([0, 0.5, 0.95, 0.99, 0.49]))
    qty = 1 if rng.random() < 0.8 else 2
    items.append({"sku": f"{prod[1]}-{rng.randint(100, 999)}-{variant.upper().replace(' ', '')}",
                  "name": prod[0], "variant": variant, "qty": qty,
                  "unit_price": str(price), "line_total": str(q2(price * qty))})
    for _ in range(rng.randint(0, 2)):
        f = rng.choice(FILLERS_ITEMS)
        p = q2(rng.randint(f[1], f[2]) + 0.99)
        items.append({"sku": f"ACC-{rng.randint(1000, 9999)}", "name": f[0], "variant": "-",
                      "qty": 1, "unit_price": str(p), "line_total": str(p)})
    subtotal = sum(Decimal(i["line_total"]) for i in items)
    shipping = q2(rng.choice([0, 4.95, 7.5, 12.0, 19.9]))
    tax = q2(subtotal * Decimal("0.08"))
    return {"order_id": oid, "placed_at": placed.isoformat(), "customer_name": name,
            "email": email, "status": "delivered", "items": items,
            "shipping": str(shipping), "tax": str(tax), "total": str(subtotal + shipping + tax)}


def pad(chat: Chat, rng: random.Random, target: int, pool: list[str]) -> None:
    """Add hold messages, knowledge-base look-ups and small talk up to ``target`` tokens."""
    talk = list(range(0, len(SMALL_TALK), 2))
    rng.shuffle(talk)
    while chat.tokens() < target:
        r = rng.random()
        if r < 0.45:
            paras = rng.sample(pool, k=min(len(pool), rng.randint(2, 4)))
            chat.tool("search_kb", {"query": rng.choice(["return policy", "refund timing",
                                                         "exchange rules", "escalation"])},
                      {"articles": [{"id": f"KB-{rng.randint(100, 999)}", "text": p}
                                    for p in paras]})
            chat.ai("Per our policy: " + paras[0])
        elif talk:
            i = talk.pop()
            chat.human(SMALL_TALK[i][1])
            chat.ai(SMALL_TALK[i + 1][1])
        else:
            chat.ai(rng.choice(HOLDS))
            chat.human(rng.choice(["sure", "ok thanks", "no worries", "👍", "np", "ok"]))


def support_case(idx: int, rng: random.Random) -> dict[str, Any]:
    kind = ["refund", "exchange", "billing"][idx % 3]
    first, last, email = person(rng)
    name = f"{first} {last}"
    chat = Chat(rng)
    facts: list[dict[str, Any]] = []
    target = rng.choice([1200, 1800, 2500, 3500, 4500, 6000, 7500, 9000])
    chat.human(rng.choice(["Hi there", "Hello", "hi, I need help with an order",
                           "Good morning!", "Hey, hoping you can help"]))
    chat.ai(rng.choice(["Hi! Thanks for reaching out. What can I help you with today?",
                        "Hello and welcome. How can I help?"]))
    email_typo = rng.random() < 0.35
    if kind in ("refund", "exchange"):
        prod = rng.choice([c for c in CATALOG if kind == "refund" or len(c[3]) > 1])
        placed = date(2024, 1, 1) + timedelta(days=rng.randint(0, 600))
        oid = order_id(rng)
        order = make_order(rng, oid, placed, name, email, main=prod)
        item = order["items"][0]
        issue = rng.choice(ISSUES[kind]).format(p=prod[0])
        wrong_first = rng.random() < 0.4
        chat.human(f"I have a problem: {issue}.")
        chat.ai("I'm sorry to hear that. Could you give me your order number and the email "
                "on the account?")
        given_email = typo(email, rng) if email_typo else email
        if wrong_first:
            other = order_id(rng)
            chat.human(f"Sure, it's {other}, email {given_email}")
            chat.tool("verify_identity", {"email": given_email},
                      {"verified": not email_typo, "reason": "no account for this email"
                       if email_typo else "ok"})
            if email_typo:
                chat.ai(f"I couldn't find an account for {given_email}. Could you double-check?")
                chat.human(f"Oops, typo. It's {email}")
                chat.tool("verify_identity", {"email": email},
                          {"verified": True, "customer_id": f"CU-{rng.randint(10000, 99999)}"})
            other_order = make_order(rng, other, placed - timedelta(days=rng.randint(40, 300)),
                                     name, email)
            chat.tool("lookup_order", {"order_id": other}, other_order)
            when = prose_date(date.fromisoformat(other_order["placed_at"]), rng)
            chat.ai(f"I see order {other} from {when}"
                    f" with a {other_order['items'][0]['name']}. Is that the one?")
            chat.human(f"No sorry, that's an old one. The right one is {oid}.")
        else:
            chat.human(f"Order {oid}, and my email is {given_email}")
            chat.tool("verify_identity", {"email": given_email},
                      {"verified": not email_typo,
                       "reason": "no account for this email" if email_typo else "ok"})
            if email_typo:
                chat.ai("Hmm, that email doesn't match any account. Could you check the spelling?")
                chat.human(f"Ah, my bad: {email}")
                chat.tool("verify_identity", {"email": email},
                          {"verified": True, "customer_id": f"CU-{rng.randint(10000, 99999)}"})
        chat.tool("lookup_order", {"order_id": oid}, order, say="Let me pull that up.")
        chat.ai(f"Found it: order {oid}, placed on {prose_date(placed, rng)}, total "
                f"{money(Decimal(order['total']))} including shipping and tax. It contains "
                + ", ".join(f"{i['qty']}x {i['name']}" for i in order["items"]) + ".")
        delivered = placed + timedelta(days=rng.randint(2, 9))
        events = []
        d = placed
        for step in ["label created", "picked up", "in transit", "arrived at hub",
                     "out for delivery", "delivered"]:
            events.append({"date": d.isoformat(), "event": step, "location": rng.choice(CITIES)})
            d = min(delivered, d + timedelta(days=rng.randint(0, 2)))
        chat.tool("get_tracking", {"order_id": oid},
                  {"carrier": rng.choice(CARRIERS), "events": events})
        if rng.random() < 0.6:
            history = []
            for _ in range(rng.randint(2, 5)):
                d0 = placed - timedelta(days=rng.randint(20, 700))
                history.append({"order_id": order_id(rng), "placed_at": d0.isoformat(),
                                "total": str(q2(rng.uniform(15, 600))),
                                "status": rng.choice(["delivered", "returned", "refunded"])})
            chat.tool("get_customer_history", {"email": email},
                      {"orders": history, "lifetime_value": str(q2(rng.uniform(200, 4000))),
                       "open_cases": 0}, say="Let me check your account history as well.")
            chat.ai(f"I can see you've been with us a while — {len(history)} earlier orders. "
                    "Thanks for being a loyal customer.")
        chat.human(rng.choice([
            "It was delivered fine, the problem is the item itself.",
            "The parcel came on time, it's the product that's the issue.",
            f"Delivery was ok. But like I said, {issue}.",
        ]))
        pad(chat, rng, target * 0.6, POLICY_PARAGRAPHS)
        if kind == "refund":
            line = Decimal(item["line_total"])
            chat.human(rng.choice([
                f"I'd like a refund for the {prod[0]} please, not store credit.",
                f"Can I just get my money back for the {prod[0]}?",
                f"Please refund the {prod[0]}. I don't want a replacement.",
                f"Refund for the {prod[0]} to my card would be best.",
            ]))
            chat.ai(f"Understood. The {prod[0]} was {money(line)} on that order"
                    + (f" ({item['qty']} x {money(Decimal(item['unit_price']))})"
                       if item["qty"] > 1 else "") + ". I'll request a refund of that amount "
                    "to your original payment method.")
            facts.append({"field": "amount", "value": str(line), "kind": "amount"})
        else:
            variants = [v for v in prod[3] if v != item["variant"]]
            want = rng.choice(variants)
            sku_out = f"{prod[1]}-{rng.randint(100, 999)}-{want.upper().replace(' ', '')}"
            chat.human(f"Could I exchange it for the {want} instead?")
            chat.tool("check_inventory", {"product": prod[0], "variant": want},
                      {"sku": sku_out, "in_stock": False, "restock_eta":
                       (placed + timedelta(days=rng.randint(30, 90))).isoformat()})
            alt = rng.choice([v for v in prod[3] if v != want] or [want])
            sku_in = f"{prod[1]}-{rng.randint(100, 999)}-{alt.upper().replace(' ', '')}"
            chat.ai(f"The {want} is out of stock right now. Would {alt} work? Let me check.")
            chat.tool("check_inventory", {"product": prod[0], "variant": alt},
                      {"sku": sku_in, "in_stock": True, "warehouse": rng.choice(CITIES)})
            chat.human(f"Yes, {alt} is fine, let's do that.")
            chat.ai(f"Great, I'll set up an exchange to {sku_in}. No extra charge.")
            facts.append({"field": "replacement_sku", "value": sku_in, "kind": "id"})
            facts.append({"field": "amount", "value": item["line_total"], "kind": "amount"})
            chat.ai(f"For the record, the item value on the exchange is "
                    f"{money(Decimal(item['line_total']))}.")
        facts += [{"field": "order_id", "value": oid, "kind": "id"},
                  {"field": "order_date", "value": placed.isoformat(), "kind": "date"},
                  {"field": "product", "value": prod[0], "kind": "text"}]
    else:
        plan, basic, charged_plan = rng.choice(PLANS)
        issue_kind = rng.choice(BILLING_ISSUES)
        cust = f"CU-{rng.randint(10000, 99999)}"
        start = date(2024, 1, 1) + timedelta(days=rng.randint(0, 500))
        invoices = []
        for k in range(rng.randint(4, 8)):
            d = start + timedelta(days=30 * k)
            invoices.append({"invoice_id": f"INV-{d.year}-{rng.randint(1000, 99999):05d}",
                             "date": d.isoformat(), "amount": f"{basic:.2f}", "plan": plan,
                             "status": "paid"})
        disputed = invoices[-1]
        expected = Decimal(f"{basic:.2f}")
        if issue_kind == "double":
            dup = dict(disputed)
            dup["invoice_id"] = f"INV-{start.year}-{rng.randint(1000, 99999):05d}"
            invoices.append(dup)
            disputed = dup
            charged = Decimal(dup["amount"])
            text = f"I was charged twice for {plan} this month"
            expected_fact = None
        elif issue_kind == "after_cancel":
            charged = Decimal(disputed["amount"])
            cancelled = date.fromisoformat(disputed["date"]) - timedelta(days=rng.randint(2, 12))
            text = (f"I cancelled my {plan} subscription on {prose_date(cancelled, rng)} but "
                    "you still charged me")
            expected = Decimal("0.00")
            expected_fact = None
        elif issue_kind == "wrong_plan":
            charged = Decimal(f"{charged_plan:.2f}")
            disputed["amount"] = f"{charged_plan:.2f}"
            text = (f"I'm on {plan} at {money(expected)} a month but the last invoice charged "
                    "me more")
            expected_fact = expected
        else:
            promo = rng.choice([10, 20, 25, 50])
            charged = Decimal(f"{basic:.2f}")
            expected = q2(charged * (100 - promo) / 100)
            text = (f"My promo code for {promo}% off wasn't applied, I should have paid "
                    f"{money(expected)}")
            expected_fact = expected
        chat.human(f"{text}.")
        chat.ai("I'm sorry about that. Can you confirm the email on your account?")
        given = typo(email, rng) if email_typo else email
        chat.human(f"{given}")
        if email_typo:
            chat.tool("verify_identity", {"email": given}, {"verified": False})
            chat.ai("That address doesn't match an account. Could you check it?")
            chat.human(f"Sorry, {email} — autocorrect")
        chat.tool("verify_identity", {"email": email}, {"verified": True, "customer_id": cust,
                                                         "name": name})
        chat.tool("list_invoices", {"customer_id": cust}, {"invoices": invoices},
                  say="Let me look at your invoices.")
        when = prose_date(date.fromisoformat(disputed["date"]), rng)
        chat.ai(f"I can see {len(invoices)} invoices on the account. The most recent is "
                f"{disputed['invoice_id']} on {when} for {money(charged)}.")
        chat.tool("get_invoice", {"invoice_id": disputed["invoice_id"]},
                  {**disputed, "amount": f"{charged:.2f}", "customer_id": cust,
                   "payment_method": rng.choice(["visa ****4421", "mastercard ****0931",
                                                 "paypal"]),
                   "line_items": [{"description": f"{plan} plan (monthly)",
                                   "amount": f"{charged:.2f}"}]})
        pad(chat, rng, target * 0.7, POLICY_PARAGRAPHS)
        chat.human(f"So can you refund the {money(charged)}?")
        chat.ai(f"I'm escalating invoice {disputed['invoice_id']} ({money(charged)}) to billing "
                "for a refund.")
        facts += [{"field": "invoice_id", "value": disputed["invoice_id"], "kind": "id"},
                  {"field": "amount", "value": f"{charged:.2f}", "kind": "amount"}]
        if expected_fact is not None:
            facts.append({"field": "expected_amount", "value": f"{expected_fact:.2f}",
                          "kind": "amount"})
    facts.append({"field": "customer_email", "value": email, "kind": "email"})
    pad(chat, rng, target, POLICY_PARAGRAPHS)
    chat.ai("I'm handing your case to our resolutions team now; they'll email you within one "
            "business day. Anything else?")
    chat.human(rng.choice(["No that's all, thanks!", "That's it. Thank you.", "nope, cheers"]))
    return {"id": f"support-{kind}-{idx:02d}", "domain": "customer_service", "scenario": kind,
            "contract": "SupportCase", "messages": chat.messages, "facts": facts}


TOPICS = [
    ("cold-weather range loss in battery electric vehicles", "range loss", "%"),
    ("effect of four-day work weeks on productivity", "productivity change", "%"),
    ("microplastic concentrations in bottled water", "particles per litre", ""),
    ("benchmark contamination in LLM evaluations", "score inflation", "points"),
    ("urban heat island mitigation by street trees", "surface temperature reduction", "°C"),
    ("heat pump efficiency below -15 °C", "seasonal COP", ""),
    ("antibiotic resistance in hospital wastewater", "resistant isolates", "%"),
    ("reading comprehension gains from phonics programmes", "effect size", ""),
    ("carbon payback time of rooftop solar", "payback time", "years"),
    ("sleep duration and adolescent grades", "GPA difference", ""),
    ("remote patient monitoring and readmissions", "readmission reduction", "%"),
    ("e-bike adoption and car trips", "car trip reduction", "%"),
]
TITLE_STARTS = ["Evidence on", "Measuring", "Revisiting", "A field study of", "Estimating"]
DESIGNS = ["panel", "RCT", "cohort", "simulation", "meta-analysis"]
AUTHORS = ["Andersen", "Baptiste", "Chowdhury", "Delgado", "Eriksen", "Fujita", "García", "Holm",
           "Iyer", "Jansen", "Kimura", "Larsen", "Moreau", "Nakamura", "Osei", "Petrov"]
VENUES = ["Nature Energy", "Applied Energy", "PNAS", "Lancet Digital Health", "J. Urban Econ.",
          "Environ. Sci. Technol.", "NeurIPS", "ACL", "Transport Policy", "BMJ Open"]
ABSTRACT_FILLER = [
    "We combine administrative records with a quasi-experimental design to estimate effects "
    "that are robust to selection on observables.",
    "Sensitivity analyses using alternative specifications, bandwidths and exclusion windows "
    "yield qualitatively similar conclusions.",
    "Heterogeneity by region and baseline level is substantial and discussed in the appendix.",
    "Limitations include measurement error in self-reported outcomes and a short follow-up.",
    "Data and replication code are available from the authors on reasonable request.",
    "The sample covers multiple sites and seasons to reduce confounding by local conditions.",
]


def paper_id(rng: random.Random, year: int) -> str:
    if rng.random() < 0.5:
        return f"arXiv:{year % 100:02d}{rng.randint(1, 12):02d}.{rng.randint(10000, 99999)}"
    return f"10.{rng.randint(1000, 9999)}/{rng.choice(['j', 's', 'nature', 'pnas'])}." \
           f"{year}.{rng.randint(100, 999999)}"


def research_case(idx: int, rng: random.Random) -> dict[str, Any]:
    topic, metric, unit = TOPICS[idx % len(TOPICS)]
    first, last, email = person(rng)
    chat = Chat(rng)
    target = rng.choice([1500, 2500, 3500, 5000, 6500, 8000, 9500])
    deadline = date(2025, 1, 1) + timedelta(days=rng.randint(0, 400))
    budget = Decimal(rng.choice([250, 400, 750, 1200, 1500, 2500]))
    chat.human(f"Hi, I'm {first} from the policy team. I need a short evidence brief on "
               f"{topic}. It's for an internal memo, so peer-reviewed sources preferred.")
    chat.ai("Happy to help. What's the deadline, and is there a budget for paywalled articles "
            "or datasets? Where should the brief go?")
    moved = rng.random() < 0.35
    first_deadline = deadline - timedelta(days=rng.randint(5, 30)) if moved else deadline
    when = rng.choice(["Deadline is {d}.", "I need it by {d}.", "It's due {d}.",
                       "Hard deadline: {d}."]).format(d=prose_date(first_deadline, rng))
    spend = rng.choice(["We have a budget of {b} for access fees.",
                        "We can spend up to {b} on paywalled papers.",
                        "Budget: {b} for articles and data."]).format(b=money(budget))
    where = rng.choice(["Send it to {e}", "Email it to {e}", "My address is {e}"]).format(e=email)
    chat.human(f"{when} {spend} {where}, and cc my manager at {person(rng)[2]} only if "
               "it's late.")
    chat.ai("Got it. Any scope limits — years, regions?")
    if moved:
        chat.human(f"Oh, and my manager just told me the deadline moved to "
                   f"{prose_date(deadline, rng)}, so a bit more time.")
        chat.ai("Good to know, I'll plan for the new date.")
    y0 = rng.choice([2012, 2015, 2018])
    chat.human(f"Studies from {y0} onwards, any region, but flag anything based only on "
               "simulations.")
    papers = []
    for _ in range(rng.randint(6, 9)):
        year = rng.randint(y0 - 3, 2025)
        val = q2(rng.uniform(0.5, 60)) if unit != "years" else q2(rng.uniform(0.5, 12))
        papers.append({"id": paper_id(rng, year), "year": year,
                       "title": f"{rng.choice(TITLE_STARTS)} {topic} ({rng.choice(DESIGNS)})",
                       "authors": f"{rng.choice(AUTHORS)}, {rng.choice(AUTHORS)} et al.",
                       "venue": rng.choice(VENUES), "value": val,
                       "n": rng.randint(40, 90000)})
    chat.tool("search_papers", {"query": topic, "since": y0},
              {"results": [{k: p[k] for k in ("id", "title", "authors", "venue", "year")}
                           | {"snippet": " ".join(rng.sample(ABSTRACT_FILLER, 2))}
                           for p in papers]},
              say="Searching the literature now.")
    chat.ai(f"I found {len(papers)} candidates. I'll read the most relevant ones.")
    eligible = [p for p in papers if p["year"] >= y0]
    reading = (eligible[: rng.randint(3, min(5, len(eligible)))] if len(eligible) >= 3
               else papers[:3])
    for p in reading:
        other1 = q2(rng.uniform(1, 99))
        body = (f"{p['title']}. {p['authors']} ({p['year']}), {p['venue']}. "
                f"Sample: n={p['n']}. " + " ".join(rng.sample(ABSTRACT_FILLER, 3)) +
                f" Key result: {metric} of {p['value']}{unit and ' ' + unit} "
                f"(95% CI {q2(p['value'] * Decimal('0.8'))} to {q2(p['value'] * Decimal('1.2'))}). "
                f"Secondary outcome: {other1}% of participants reported changes. " +
                " ".join(rng.sample(ABSTRACT_FILLER, 3)))
        chat.tool("read_paper", {"id": p["id"]}, {"id": p["id"], "text": body})
        chat.ai(f"{p['id']} reports {metric} of {p['value']}{unit and ' ' + unit}.")
    drop = reading[-1] if len(reading) > 2 and rng.random() < 0.6 else None
    if drop is not None:
        chat.human(f"Please leave out {drop['id']}, the methodology has been disputed.")
        chat.ai(f"Understood, I'll exclude {drop['id']}.")
    final = [p for p in reading if p is not drop]
    pool = ABSTRACT_FILLER + POLICY_PARAGRAPHS[6:7]
    while chat.tokens() < target:
        p = rng.choice(papers)
        r = rng.random()
        if r < 0.5:
            chat.tool("web_search", {"query": f"{p['title']} critique"},
                      {"results": [{"url": f"https://blog.example.org/{rng.randint(1000, 9999)}",
                                    "text": " ".join(rng.sample(pool, 3))} for _ in range(3)]})
            chat.ai(rng.choice(["Nothing that changes the picture in the commentary I found.",
                                "The critiques mostly concern external validity.",
                                "One blog questions the sample, but offers no new data."]))
        elif r < 0.75:
            chat.tool("get_citations", {"id": p["id"]},
                      {"id": p["id"], "cited_by": rng.randint(0, 900),
                       "recent": [paper_id(rng, rng.randint(2019, 2025)) for _ in range(3)]})
            chat.ai(f"{p['id']} is cited fairly widely; no retractions or corrections noted.")
        else:
            chat.human(rng.choice([
                "Is there anything from Scandinavia? My director asked.",
                "Could you note which of these are open access?",
                "How confident are you in the overall direction of the evidence?",
                "Any meta-analyses among them?",
            ]))
            chat.ai(rng.choice([
                "A couple of the studies include Nordic sites; I'll mention it in the scope.",
                "Most are open access; the remainder are within the budget.",
                "The direction is consistent across designs, though magnitudes vary.",
                "No full meta-analysis yet, but two papers pool several sites.",
            ]))
        if rng.random() < 0.2:
            chat.human(rng.choice(["Thanks, keep going.", "Any luck?", "Sounds good so far."]))
    chat.ai("Final source list for the writer: " + ", ".join(p["id"] for p in final) +
            f". Deadline {deadline.isoformat()}; budget {money(budget)}.")
    chat.human("Perfect, thank you!")
    facts = [{"field": "requester_email", "value": email, "kind": "email"},
             {"field": "deadline", "value": deadline.isoformat(), "kind": "date"},
             {"field": "budget", "value": str(budget), "kind": "amount"}]
    for p in final:
        facts.append({"field": "sources", "value": p["id"], "kind": "id"})
        facts.append({"field": "key_figures.value", "value": str(p["value"]), "kind": "amount"})
    return {"id": f"research-{idx:02d}", "domain": "research", "scenario": "literature_brief",
            "contract": "ResearchBrief", "messages": chat.messages, "facts": facts}


def generate(seed: int = SEED) -> list[dict[str, Any]]:
    """The corpus: ``N_SUPPORT`` support chats then ``N_RESEARCH`` research chats."""
    rng = random.Random(seed)
    corpus = [support_case(i, random.Random(rng.random())) for i in range(N_SUPPORT)]
    corpus += [research_case(i, random.Random(rng.random())) for i in range(N_RESEARCH)]
    for case in corpus:
        case["source_tokens_approx"] = sum(approx_tokens(message_text(m)) + 4
                                           for m in case["messages"])
    return corpus


def main() -> None:
    corpus = generate()
    out = HERE / "corpus.json"
    out.write_text(json.dumps({"seed": SEED, "transcripts": corpus}, ensure_ascii=False,
                              indent=0) + "\n")
    sizes = sorted(c["source_tokens_approx"] for c in corpus)
    print(f"wrote {len(corpus)} transcripts to {out} "
          f"(tokens min {sizes[0]}, median {sizes[len(sizes) // 2]}, max {sizes[-1]})")


if __name__ == "__main__":
    main()
