"""localstripe, plus the one Stripe list filter msp-billing reads that localstripe lacks: a customer's
PaymentIntents (``GET /v1/payment_intents?customer=cus_...``, how a payment is found by its reference).
Run as localstripe's own command (``python localstripe_patched.py --port N --from-scratch``)."""

from __future__ import annotations

import sys
from typing import Any

from localstripe.resources import PaymentIntent, StripeObject
from localstripe.server import start

_list_all = StripeObject._api_list_all.__func__


def _payment_intents(
    cls: type[PaymentIntent],
    /,
    url: str,
    customer: str | None = None,
    limit: int | None = None,
    starting_after: str | None = None,
    **kwargs: Any,
) -> Any:
    listed = _list_all(cls, url, limit=limit, starting_after=starting_after, **kwargs)
    if customer is not None:
        listed._list = [intent for intent in listed._list if intent.customer == customer]
    return listed


PaymentIntent._api_list_all = classmethod(_payment_intents)

if __name__ == "__main__":
    sys.exit(start())
