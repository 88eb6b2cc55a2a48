"""DynamoDB consumed capacity of everything a benchmark process does, from ReturnConsumedCapacity."""

from __future__ import annotations

import threading
from typing import Any

import botocore.client

CAPACITY_OPERATIONS = {
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchGetItem",
    "BatchWriteItem",
    "Query",
    "Scan",
    "TransactWriteItems",
    "TransactGetItems",
}
READ_OPERATIONS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"}


class CapacityMeter:
    """Adds ReturnConsumedCapacity=TOTAL to every DynamoDB call of this process and sums the answers."""

    def __init__(self) -> None:
        self.rcu = 0.0
        self.wcu = 0.0
        self.calls = 0
        self._lock = threading.Lock()
        self._original = botocore.client.BaseClient._make_api_call

    def install(self) -> None:
        meter = self
        original = self._original

        def measured(client: Any, operation: str, params: dict[str, Any]) -> Any:
            if client.meta.service_model.service_name != "dynamodb" or operation not in CAPACITY_OPERATIONS:
                return original(client, operation, params)
            response = original(client, operation, {**params, "ReturnConsumedCapacity": "TOTAL"})
            consumed = response.get("ConsumedCapacity") or []
            entries = consumed if isinstance(consumed, list) else [consumed]
            with meter._lock:
                meter.calls += 1
                for entry in entries:
                    meter.rcu += float(entry.get("ReadCapacityUnits", 0) or 0)
                    meter.wcu += float(entry.get("WriteCapacityUnits", 0) or 0)
                    if not entry.get("ReadCapacityUnits") and not entry.get("WriteCapacityUnits"):
                        # DynamoDB Local reports CapacityUnits only: attribute it by operation.
                        units = float(entry.get("CapacityUnits", 0) or 0)
                        if operation in READ_OPERATIONS:
                            meter.rcu += units
                        else:
                            meter.wcu += units
            return response

        botocore.client.BaseClient._make_api_call = measured  # type: ignore[method-assign]

    def uninstall(self) -> None:
        botocore.client.BaseClient._make_api_call = self._original  # type: ignore[method-assign]

    def reset(self) -> tuple[float, float, int]:
        with self._lock:
            figures = (self.rcu, self.wcu, self.calls)
            self.rcu = self.wcu = 0.0
            self.calls = 0
        return figures
