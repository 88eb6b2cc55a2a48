"""One small Chalice app per Lambda function, and the composed app of the local server."""

from __future__ import annotations

from collections.abc import Callable

from chalice.app import Blueprint, Chalice, Request, Response

from billing_core.observability import logger


def log_each_request(event: Request, get_response: Callable[[Request], Response]) -> Response:
    """Powertools Logger as Chalice middleware: one structured line per request, correlated by the
    API Gateway request id."""
    context = event.context or {}
    logger.set_correlation_id(context.get("requestId"))
    response = get_response(event)
    logger.info(
        "request handled",
        extra={"method": event.method, "path": context.get("resourcePath"), "status": response.status_code},
    )
    return response


def partner_api_app(app_name: str, *blueprints: Blueprint) -> Chalice:
    app = Chalice(app_name=app_name)
    app.register_middleware(log_each_request, "http")
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    return app
