"""The contracts the handoff benchmark fills from the corpus transcripts."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field

from relaygraph.nodes import Contract, Verbatim


class SupportCase(Contract):
    """A customer-service case handed from the intake agent to the resolver."""

    case_type: Literal["refund", "exchange", "billing"]
    customer_name: Annotated[str | None, Verbatim()] = None
    customer_email: Annotated[str, Verbatim()] = Field(
        description="the email the customer wants to be contacted at (their latest word)")
    order_id: Annotated[str | None, Verbatim()] = Field(
        default=None, description="the order the case is about (refund/exchange)")
    order_date: Annotated[date | None, Verbatim(near=("placed", "ordered", "order date"),
                                                near_field="order_id")] = Field(
        default=None, description="when the order was placed (not shipped/delivered)")
    product: Annotated[str | None, Verbatim()] = Field(
        default=None, description="the product the case is about, as named in the order")
    amount: Annotated[Decimal | None, Verbatim()] = Field(
        default=None, description="refund amount, or the disputed charge for billing")
    replacement_sku: Annotated[str | None, Verbatim()] = Field(
        default=None, description="exchange only: the in-stock SKU the customer accepted")
    invoice_id: Annotated[str | None, Verbatim()] = None
    expected_amount: Annotated[Decimal | None, Verbatim()] = Field(
        default=None, description="billing only: what the customer should have been charged")
    issue: str = Field(description="the problem in the customer's words, one sentence")


class KeyFigure(Contract):
    """One quantitative result and the source it comes from."""

    metric: str
    value: Annotated[Decimal, Verbatim()]
    source: Annotated[str, Verbatim()]


class ResearchBrief(Contract):
    """A research request handed from the scoping agent to the writer."""

    topic: str
    requester_email: Annotated[str, Verbatim()]
    deadline: Annotated[date, Verbatim()]
    budget: Annotated[Decimal | None, Verbatim()] = None
    sources: Annotated[list[str], Verbatim()] = Field(
        description="ids (DOI or arXiv) of the sources agreed on")
    key_figures: list[KeyFigure] = []
    scope: str = ""


CONTRACTS: dict[str, type[Contract]] = {"SupportCase": SupportCase,
                                        "ResearchBrief": ResearchBrief}


class SupportCasePlain(SupportCase):
    """``SupportCase`` with a plain ``Verbatim()`` on the order date (no context rules).

    The benchmark runs it as a baseline: it shows which distortions only the ``near`` /
    ``near_field`` context rules catch (a date that appears elsewhere in the source).
    """

    order_date: Annotated[date | None, Verbatim()] = None
