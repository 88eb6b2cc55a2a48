"""The domain ring imports no AWS or provider library; services reach adapters only through ports."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "billing_core"
FORBIDDEN_IN_DOMAIN = ("boto3", "botocore", "pynamodb", "stripe", "aws_lambda_powertools", "chalice", "os")
FORBIDDEN_IN_SERVICES = (
    "boto3",
    "botocore",
    "pynamodb",
    "stripe",
    "aws_lambda_powertools",
    "chalice",
    "billing_core.adapters",
)


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize(("ring", "forbidden"), [("domain", FORBIDDEN_IN_DOMAIN), ("services", FORBIDDEN_IN_SERVICES)])
def test_ring_imports(ring: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((SRC / ring).glob("*.py"))
    assert files, f"no modules found in {ring}"
    offenders = {
        f"{path.name}: {module}"
        for path in files
        for module in imported_modules(path)
        if any(module == name or module.startswith(name + ".") for name in forbidden)
    }
    assert not offenders, offenders
