"""The partner API on Chalice's local server, composed from every API function in template.yaml."""

from __future__ import annotations

import ast
import importlib
import sys
import threading
from pathlib import Path
from typing import Any

from chalice.app import Blueprint, Chalice
from chalice.config import Config
from chalice.local import LocalDevServer

from billing_core.api.app import partner_api_app
from infra.template import ApiFunction, api_functions


def _sibling_modules_imported_by(handler_file: Path) -> list[str]:
    """Modules of the function's own folder that its handler imports (``from activate_routes import ...``)."""
    siblings = {path.stem for path in handler_file.parent.glob("*.py")}
    tree = ast.parse(handler_file.read_text())
    return [
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module in siblings and node.level == 0
    ]


def function_blueprints(function: ApiFunction) -> list[Blueprint]:
    """The blueprints a function's handler registers, found without executing the handler module.

    The handler (``app.py``) registers its blueprints into its own Chalice app; Chalice cannot register
    one Blueprint into two apps (the second registration loses the route methods), so locally we import
    only the blueprint modules the handler imports, from its CodeUri as Lambda would."""
    code_dir = str(function.code_dir)
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    handler_file = function.code_dir / f"{function.handler_module}.py"
    blueprints: list[Blueprint] = []
    for module_name in _sibling_modules_imported_by(handler_file):
        module = importlib.import_module(module_name)
        blueprints += [value for value in vars(module).values() if isinstance(value, Blueprint)]
    return blueprints


def composed_partner_api(template: dict[str, Any]) -> Chalice:
    """One Chalice app holding every API function's blueprints; fails if the template names a route
    that no blueprint serves, so local and deployed routes cannot drift."""
    functions = api_functions(template)
    blueprints = [blueprint for function in functions for blueprint in function_blueprints(function)]
    app = partner_api_app("msp-billing-local", *blueprints)
    served = {(method, path) for path, entries in app.routes.items() for method in entries}
    declared = {route for function in functions for route in function.routes}
    if declared - served:
        raise RuntimeError(f"routes in template.yaml without a handler: {sorted(declared - served)}")
    if served - declared:
        raise RuntimeError(f"routes served but not declared in template.yaml: {sorted(served - declared)}")
    return app


class LocalApiServer:
    def __init__(self, app: Chalice, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server = LocalDevServer(app, Config.create(app_name=app.app_name), host, port)
        self._thread = threading.Thread(target=self._server.server.serve_forever, name="local-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
