"""Lambda entry point of the activate function (Handler: app.app)."""

from activate_routes import activate_api

from billing_core.api.app import partner_api_app

app = partner_api_app("msp-billing-activate", activate_api)
