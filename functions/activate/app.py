"""Lambda entry point of the activate function (Handler: app.app)."""

from activate_routes import activate_api

from billing_core.api.app import counts_outcomes, partner_api_app
from billing_core.observability import ACTIVATION_OUTCOMES

app = partner_api_app("msp-billing-activate", activate_api)
# Activations and their payments, as CloudWatch metrics (the payment-failure-rate alarm counts them).
app.register_middleware(counts_outcomes("POST", "/plan/activation", ACTIVATION_OUTCOMES), "http")
