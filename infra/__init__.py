"""Everything that stands up and drives msp-billing outside AWS: DynamoDB Local, the moto server,
resources created from template.yaml, the partner API on Chalice's local server, and the CLI."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The local stack's state (DynamoDB data, the test clock, the demo's e-mails and reports). The test suite
# points it at a folder of its own (tests/conftest.py), so it never reads or changes what `make up` left.
STATE_DIR_VARIABLE = "MSP_BILLING_STATE_DIR"
LOCAL_STATE_DIR = Path(os.environ.get(STATE_DIR_VARIABLE) or PROJECT_ROOT / ".local")
# Installed tools (DynamoDB Local from npm) are not state: one install serves the user and the tests alike.
LOCAL_TOOLS_DIR = PROJECT_ROOT / ".local"
# Resources of the local stack are named <stack>-<LogicalId> (see infra.template.LocalNames).
DEFAULT_STACK_NAME = "msp-local"
