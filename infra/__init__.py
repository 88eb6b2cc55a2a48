"""Everything that stands up and drives msp-billing outside AWS: DynamoDB Local, the moto server,
resources created from template.yaml, the partner API on Chalice's local server, and the CLI."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCAL_STATE_DIR = PROJECT_ROOT / ".local"
# Resources of the local stack are named <stack>-<LogicalId> (see infra.template.LocalNames).
DEFAULT_STACK_NAME = "msp-local"
