"""Licence subscriptions, the orders that group them, their charge schedule and billing-frequency
changes (Microsoft Partner Center's rules, seed 002).

A subscription bills in advance: each billing period is charged in full when it starts, on the invoice
of the calendar month the period starts in. Periods are month offsets from the subscription's anchor
(``periods.add_months``), so their dates never drift. The charges already made are kept on the
subscription (its *charge schedule*): a change credits from the amount actually charged for the period
it cuts short, never from today's price, and never more than what is left of that charge.

Changes apply to the whole order (every subscription and add-on in it). The order records the commerce
experience it was bought under, and that decides which changes it may make:

- new experience, scheduled (frequency only): takes effect when the next billing period starts; the
  term and its periods are not reset; the new frequency is billed at the current list price, without
  promotion; it can be withdrawn until it takes effect;
- new experience, immediate (a longer term, with a billing frequency): a new term starts today; the
  unused days of the current period are credited, the first period of the new term is charged at the
  current list price; the promotion stays if it is eligible for the new term, else another eligible one
  applies by itself (the seed's note on term changes);
- legacy experience (frequency only, immediate): the term is reset to 12 months from today at the
  current list price without promotion; the unused days are credited and the new period is charged.

Every change keeps the subscription id, is free of charge and can be repeated; an immediate change
deletes a pending scheduled change. A renewal (the next term of the same cycle) re-prices from the list
in effect on its first day; a promotion survives it only while it still runs.

The engine is split by concern; this module is its public surface:

- ``subscription``: a subscription, its charge schedule, renewal, the lifecycle rule with the monthly plan;
- ``ordering``: orders, their commerce experience, buying and the starting price;
- ``change_rules``: seed 002's matrices and prerequisites as data, the changes of a whole order;
- ``subscription_lines``: the invoice lines of a month.
"""

from __future__ import annotations

from billing_core.domain.change_rules import (
    IMMEDIATE_TERM_CHANGES,
    SCHEDULED_FREQUENCY_CHANGES,
    ChangeMode,
    ChangeNotAllowed,
    ChangeOption,
    ChangeRequest,
    Refusal,
    change_billing_frequency_legacy,
    change_options,
    change_order,
    change_term_now,
    immediate_refusals,
    legacy_refusals,
    order_change_options,
    prerequisite_refusals,
    schedule_frequency_change,
    scheduled_refusals,
    withdraw_scheduled_change,
)
from billing_core.domain.ordering import (
    MAX_QUANTITY,
    MAX_SUBSCRIPTIONS_PER_ORDER,
    CommerceExperience,
    Order,
    OrderLine,
    PromotionRule,
    list_price_snapshot,
    new_subscriptions,
)
from billing_core.domain.subscription import (
    BASIS_POINTS,
    Charge,
    ChargeKind,
    Owner,
    PendingChange,
    PriceSnapshot,
    Subscription,
    SubscriptionState,
    credit_unused_days,
    end_with_plan,
    last_bill_month,
    new_charges,
    settle_charge_history,
)
from billing_core.domain.subscription_lines import (
    charge_line,
    last_day,
    subscription_invoice_lines,
)

__all__ = [
    "BASIS_POINTS",
    "IMMEDIATE_TERM_CHANGES",
    "MAX_QUANTITY",
    "MAX_SUBSCRIPTIONS_PER_ORDER",
    "SCHEDULED_FREQUENCY_CHANGES",
    "ChangeMode",
    "ChangeNotAllowed",
    "ChangeOption",
    "ChangeRequest",
    "Charge",
    "ChargeKind",
    "CommerceExperience",
    "Order",
    "OrderLine",
    "Owner",
    "PendingChange",
    "PriceSnapshot",
    "PromotionRule",
    "Refusal",
    "Subscription",
    "SubscriptionState",
    "change_billing_frequency_legacy",
    "change_options",
    "change_order",
    "change_term_now",
    "charge_line",
    "credit_unused_days",
    "end_with_plan",
    "immediate_refusals",
    "last_bill_month",
    "last_day",
    "legacy_refusals",
    "list_price_snapshot",
    "new_charges",
    "new_subscriptions",
    "order_change_options",
    "prerequisite_refusals",
    "schedule_frequency_change",
    "scheduled_refusals",
    "settle_charge_history",
    "subscription_invoice_lines",
    "withdraw_scheduled_change",
]
