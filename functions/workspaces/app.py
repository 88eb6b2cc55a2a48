"""Lambda entry point of the workspaces function (Handler: app.app)."""

from workspaces_routes import workspaces_api

from billing_core.api.app import partner_api_app

app = partner_api_app("msp-billing-workspaces", workspaces_api)
