"""Lambda entry point of the portal function (Handler: app.app): billing history."""

from history_routes import history_api

from billing_core.api.app import partner_api_app

app = partner_api_app("msp-billing-portal", history_api)
