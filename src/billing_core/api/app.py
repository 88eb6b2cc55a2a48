"""One small Chalice app per Lambda function, and the composed app of the local server."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from chalice.app import Blueprint, Chalice, Request, Response

from billing_core.observability import BusinessMetric, business_metrics, logger

Middleware = Callable[[Request, Callable[[Request], Response]], Response]


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


# Chalice answers some requests itself, before a view runs, with {"Code", "Message"}; the partner API
# promises one error shape, so those answers are rewritten into it.
FRAMEWORK_ERROR_CODES = {
    "MethodNotAllowedError": "method_not_allowed",
    "UnsupportedMediaType": "unsupported_media_type",
    "BadRequest": "bad_request",
    "InternalServerError": "internal_error",
}


def framework_errors_in_the_api_shape(event: Request, get_response: Callable[[Request], Response]) -> Response:
    response = get_response(event)
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and set(body) == {"Code", "Message"}:
        code = FRAMEWORK_ERROR_CODES.get(str(body["Code"]), "error")
        response.body = {"error": {"code": code, "message": str(body["Message"])}}
    return response


def counts_outcomes(method: str, path: str, metrics_by_status: Mapping[int, tuple[BusinessMetric, ...]]) -> Middleware:
    """Middleware counting the answers of one route as business metrics (e.g. activations and their payments:
    ``observability.ACTIVATION_OUTCOMES``), published with the response."""

    def count(event: Request, get_response: Callable[[Request], Response]) -> Response:
        response = get_response(event)
        if event.method == method and (event.context or {}).get("resourcePath") == path:
            for metric in metrics_by_status.get(response.status_code, ()):
                business_metrics.count(metric)
            business_metrics.publish()
        return response

    return count


def partner_api_app(app_name: str, *blueprints: Blueprint) -> Chalice:
    app = Chalice(app_name=app_name)
    app.register_middleware(log_each_request, "http")
    app.register_middleware(framework_errors_in_the_api_shape, "http")
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    return app
