"""The package declares what it imports, and requirements.txt repeats pyproject's pins.

Every top-level module imported anywhere under platform/, evaluators/, jobs/ and dashboards/
(imports inside functions included) must come from the standard library, from this project,
or from a distribution in pyproject.toml's ``[project] dependencies``; tests/ may also use the
``dev`` extra. ``pip install .`` into a clean virtualenv then gives a working steermoe, and
``make venv`` (``-r requirements.txt`` then ``--no-deps -e .``) installs the same pins.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from collections import defaultdict
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
REQUIREMENTS = ROOT / "requirements.txt"
FIRST_PARTY = {"steermoe", "evaluators", "jobs", "dashboards"}
# Tests import their helper modules (synth_fixtures, mlflow_poll, ...) by bare name.
TEST_HELPERS = {p.stem for p in (ROOT / "tests").glob("*.py")}
# Import name -> distribution, where the two differ and the installed metadata may not say.
IMPORT_TO_DIST = {"yaml": "pyyaml", "piper": "piper-tts"}
# name, optional [extras], then the version specifier (an environment marker is ignored).
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name: ``PyYAML`` -> ``pyyaml``, ``a_b.c`` -> ``a-b-c``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(requirement: str) -> tuple[str, str, str]:
    """(canonical name, extras, specifier) of a requirement string such as ``ray[serve]==2.6``."""
    m = REQUIREMENT.match(requirement)
    assert m, f"cannot parse requirement {requirement!r}"
    extras = ",".join(sorted(e.strip() for e in (m[2] or "[]")[1:-1].split(",") if e.strip()))
    return canonical(m[1]), extras, m[3].replace(" ", "")


def declared(*extras: str) -> dict[str, tuple[str, str]]:
    """Canonical name -> (extras, specifier) of the dependencies plus the named extras."""
    reqs = list(PROJECT.get("dependencies", []))
    for extra in extras:
        reqs += PROJECT.get("optional-dependencies", {}).get(extra, [])
    out = {}
    for req in reqs:
        name, ex, spec = parse(req)
        assert name not in out, f"pyproject.toml declares {name!r} twice"
        out[name] = (ex, spec)
    return out


def pinned_requirements() -> dict[str, tuple[str, str]]:
    """Canonical name -> (extras, specifier) of requirements.txt."""
    out = {}
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), f"requirements.txt: options are not expected: {line!r}"
        name, ex, spec = parse(line)
        assert name not in out, f"requirements.txt lists {name!r} twice"
        out[name] = (ex, spec)
    return out


def show(name: str, reqs: dict[str, tuple[str, str]]) -> str:
    extras, spec = reqs[name]
    return f"{name}[{extras}]{spec}" if extras else f"{name}{spec}"


def imported_modules(roots: list[str]) -> dict[str, set[str]]:
    """Top-level module name -> files (relative to the repo) that import it, relative imports
    left out; every ``import`` statement counts, at module level or inside a function."""
    found: dict[str, set[str]] = defaultdict(set)
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found[name.split(".", 1)[0]].add(rel)
    return found


def distributions_of(module: str) -> list[str]:
    """Canonical names of the distributions that provide top-level ``module`` ([] = unknown)."""
    if module in IMPORT_TO_DIST:
        return [IMPORT_TO_DIST[module]]
    dists = importlib.metadata.packages_distributions().get(module, [])
    return sorted({canonical(d) for d in dists})


def undeclared(roots: list[str], allowed: dict, local: set[str]) -> list[str]:
    problems = []
    for module, files in sorted(imported_modules(roots).items()):
        if module in sys.stdlib_module_names or module in FIRST_PARTY or module in local:
            continue
        dists = distributions_of(module)
        where = ", ".join(sorted(files))
        if not dists:
            problems.append(
                f"{module!r} (imported by {where}) is not installed, so its distribution is "
                "unknown: declare it and add the name to IMPORT_TO_DIST in this test"
            )
        elif not any(d in allowed for d in dists):
            problems.append(
                f"{module!r} (distribution {' or '.join(dists)}) is imported by {where} "
                "but not declared"
            )
    return problems


def test_runtime_imports_are_declared():
    problems = undeclared(["platform", "evaluators", "jobs", "dashboards"], declared(), local=set())
    assert not problems, (
        "undeclared runtime imports; add each distribution, pinned, to [project] dependencies "
        "in pyproject.toml and to requirements.txt:\n  " + "\n  ".join(problems)
    )


def test_test_imports_are_declared():
    problems = undeclared(["tests"], declared("dev"), local=TEST_HELPERS)
    assert not problems, (
        "undeclared test imports; add each distribution, pinned, to [project] dependencies or "
        "the `dev` extra "
        "([project.optional-dependencies]) in pyproject.toml and to requirements.txt:\n  "
        + "\n  ".join(problems)
    )


def test_requirements_txt_repeats_pyproject_pins():
    """scripts/setup.sh installs requirements.txt and then the project with ``--no-deps``:
    a dependency missing there would never be installed, a different pin would drift."""
    project, pinned = declared("dev"), pinned_requirements()
    missing = sorted(set(project) - set(pinned))
    extra = sorted(set(pinned) - set(project))
    differ = [
        f"{name}: pyproject {show(name, project)!r} vs requirements.txt {show(name, pinned)!r}"
        for name in sorted(set(project) & set(pinned))
        if project[name] != pinned[name]
    ]
    assert not missing, f"in pyproject.toml but not in requirements.txt: {missing}"
    assert not extra, f"in requirements.txt but not declared in pyproject.toml: {extra}"
    assert not differ, "pins differ:\n  " + "\n  ".join(differ)


def test_torch_stays_pinned():
    """An unpinned torch pulls a multi-GB CUDA build."""
    assert declared()["torch"] == ("", "==2.13.0")
    assert pinned_requirements()["torch"] == ("", "==2.13.0")
