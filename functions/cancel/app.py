"""Lambda entry point of the cancel function's partner API (Handler: app.app)."""

from cancel_routes import cancel_api

from billing_core.api.app import partner_api_app

app = partner_api_app("msp-billing-cancel", cancel_api)
