"""billing-core: the shared layer of msp-billing.

Three rings, imported inwards only:
- ``domain``: pure business rules (money, calendar, prices, plans, workspaces); no AWS library.
- ``services``: use cases orchestrating the domain through the ports in ``ports``.
- ``adapters``: PynamoDB, payment providers, Powertools idempotency, and ``api`` for HTTP shaping.
"""
