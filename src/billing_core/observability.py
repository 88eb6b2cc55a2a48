"""Powertools Logger shared by every function (JSON logs, correlation ids)."""

from __future__ import annotations

from aws_lambda_powertools import Logger

logger = Logger(service="msp-billing")
