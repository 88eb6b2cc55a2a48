"""The layer ships boto3 with the botocore it was tested with: both pinned among the runtime dependencies
(what `make layer` installs), at the versions the tests run with, and a pair boto3 accepts."""

from __future__ import annotations

import tomllib
from importlib.metadata import requires, version

from packaging.requirements import Requirement

from infra import PROJECT_ROOT


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return project


def _pins(requirements: object) -> dict[str, str]:
    assert isinstance(requirements, list)
    pins = {}
    for line in requirements:
        requirement = Requirement(str(line))
        specifiers = list(requirement.specifier)
        if len(specifiers) == 1 and specifiers[0].operator == "==":
            pins[requirement.name.lower()] = specifiers[0].version
    return pins


def test_boto3_and_botocore_are_pinned_runtime_dependencies_at_the_tested_versions() -> None:
    runtime = _pins(_project()["dependencies"])
    assert {"boto3", "botocore"} <= set(runtime)
    assert runtime["boto3"] == version("boto3")
    assert runtime["botocore"] == version("botocore")
    # One pin each: the dev tooling does not pin them again.
    optional = _project()["optional-dependencies"]
    assert isinstance(optional, dict)
    assert not {"boto3", "botocore"} & set(_pins(optional["dev"]))


def test_the_pinned_botocore_is_one_the_pinned_boto3_accepts() -> None:
    runtime = _pins(_project()["dependencies"])
    # boto3's metadata spells it the old way, "botocore (<1.45.0,>=1.44.5)"; the crt extra is another line.
    (wanted,) = [
        Requirement(line.replace("(", "").replace(")", ""))
        for line in requires("boto3") or []
        if line.startswith("botocore") and ";" not in line
    ]
    assert wanted.specifier.contains(runtime["botocore"])
