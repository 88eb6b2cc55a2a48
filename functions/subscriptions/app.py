"""Lambda entry point of the subscriptions function (Handler: app.app)."""

from subscriptions_routes import subscriptions_api

from billing_core.api.app import partner_api_app

app = partner_api_app("msp-billing-subscriptions", subscriptions_api)
