"""`requirements.lock` is what `make` installs (`pip install --require-hashes`):
every dependency pyproject.toml declares must be pinned in it, at a version
the declaration allows, with hashes. A dependency added without `make lock`
fails here, not on a fresh machine."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)")


def _pins() -> dict[str, list[Version]]:
    pins: dict[str, list[Version]] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = PIN.match(line)
        if match:
            name, version = match.groups()
            pins.setdefault(canonicalize_name(name), []).append(Version(version))
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(text) for text in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        declared.extend(Requirement(text) for text in extra)
    return [r for r in declared if canonicalize_name(r.name) != canonicalize_name(project["name"])]


def test_every_declared_dependency_is_locked_at_an_allowed_version() -> None:
    pins = _pins()
    for requirement in _declared():
        versions = pins.get(canonicalize_name(requirement.name))
        assert versions, f"{requirement.name} is not in requirements.lock: run `make lock`"
        for version in versions:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"requirements.lock pins {requirement.name}=={version}, outside "
                f"{requirement.specifier}: run `make lock`"
            )


def test_every_pin_has_hashes_and_ironbook_is_not_pinned() -> None:
    text = (ROOT / "requirements.lock").read_text()
    pinned = [line for line in text.splitlines() if PIN.match(line)]
    assert pinned
    for line in pinned:
        assert line.endswith("\\"), f"no hashes follow {line}"
    assert "ironbook" not in _pins(), "ironbook itself is installed with --no-deps -e ."
    assert text.count("--hash=sha256:") >= len(pinned)
