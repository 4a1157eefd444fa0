"""The docs cannot drift: the configuration reference is generated, the README points at real
files, jobs, flags, configs and make targets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from steermoe import config_docs
from steermoe.config import Config, ModelConfig, SteeringConfig
from steermoe.synth.build_config import BuildConfig

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REFERENCE = ROOT / "docs" / "configuration.md"
REGENERATE = (
    "PYTHONPATH=platform:. .venv/bin/python -m steermoe.config_docs > docs/configuration.md"
)


def _fields(cls: type[BaseModel], prefix: str = ""):
    """(key path, model, field name) of every field, nested models included."""
    for name, info in cls.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        yield path, cls, name
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            yield from _fields(sub, path)


def _all_models(cls: type[BaseModel]) -> set[type[BaseModel]]:
    out = {cls}
    for info in cls.model_fields.values():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out |= _all_models(sub)
    return out


@pytest.fixture(scope="module")
def reference() -> str:
    return config_docs.render_reference()


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_committed_reference_is_current(reference):
    assert REFERENCE.is_file(), f"docs/configuration.md is missing; run: {REGENERATE}"
    assert REFERENCE.read_text(encoding="utf-8") == reference, (
        f"docs/configuration.md is stale (the config models changed); run: {REGENERATE}"
    )


@pytest.mark.parametrize("root", [Config, BuildConfig], ids=["Config", "BuildConfig"])
def test_every_field_is_documented(reference, root):
    missing, undescribed = [], []
    for path, cls, name in _fields(root):
        if f"| `{path}` |" not in reference and f"### `{path}`\n" not in reference:
            missing.append(path)
        if not config_docs.describe(cls, name):
            undescribed.append(f"{cls.__name__}.{name}")
    assert not missing, f"fields absent from the reference: {missing}"
    assert not undescribed, (
        "fields without a description: add a `# comment` line above each in the model's "
        f"source (or an entry in config_docs.FALLBACK): {undescribed}"
    )


def test_comments_are_read_from_the_source():
    assert config_docs.describe(SteeringConfig, "num_experts").startswith("Experts per layer (N)")
    # A comment over two lines is joined into one.
    encoder = config_docs.describe(ModelConfig, "encoder")
    assert "`tiny-random-whisper`), a local Hugging Face folder or a hub id." in encoder


def test_fallback_descriptions_name_real_fields():
    models = {m.__name__: m for m in _all_models(Config) | _all_models(BuildConfig)}
    for base in list(models.values()):  # fields may be declared on a base class
        for klass in base.__mro__:
            if isinstance(klass, type) and issubclass(klass, BaseModel):
                models.setdefault(klass.__name__, klass)
    for key in config_docs.FALLBACK:
        model, _, field = key.partition(".")
        assert model in models, f"FALLBACK {key}: no model {model}"
        assert field in models[model].model_fields, f"FALLBACK {key}: no field {field}"


def test_reference_shows_real_validation_errors(reference):
    assert "\n  model.steering.top_k: must be <= num_experts (4), got 8\n" in reference
    assert "\n  model.steering.num_expert: unknown key\n" in reference
    assert "(accepted)" not in reference


# ---------------------------------------------------------------------------------- README


def _relative_links(text: str) -> list[str]:
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link for link in links if not re.match(r"^[a-z]+:|^#", link)]


def test_readme_links_point_to_existing_files(readme):
    links = _relative_links(readme)
    assert "docs/configuration.md" in links
    missing = [link for link in links if not (ROOT / link.split("#")[0]).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_readme_anchors_exist(readme):
    headings = re.findall(r"^#+ (.+)$", readme, flags=re.M)
    anchors = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
    wanted = re.findall(r"\]\(#([^)]+)\)", readme)
    assert wanted
    assert not [a for a in wanted if a not in anchors], sorted(set(wanted) - anchors)


def _commands(text: str) -> str:
    return text.replace("\\\n", " ")  # join shell continuation lines


def test_readme_modules_exist(readme):
    modules = set(re.findall(r"python -m ((?:jobs|dashboards|steermoe)\.[\w.]+)", readme))
    assert {"jobs.train", "jobs.sweep", "jobs.serve", "jobs.evaluate"} <= modules
    missing = []
    for module in sorted(modules):
        rel = Path(*module.split("."))
        candidates = [ROOT / f"{rel}.py", ROOT / "platform" / f"{rel}.py"]
        if not any(p.is_file() for p in candidates):
            missing.append(module)
    assert not missing, f"README runs modules that do not exist: {missing}"


def test_readme_job_flags_exist(readme):
    """Every `--flag` written after `python -m jobs.X` on a command line is defined by jobs/X.py."""
    unknown = []
    for line in _commands(readme).splitlines():
        for match in re.finditer(r"python -m jobs\.(\w+)([^`|]*)", line):
            job, rest = match.groups()
            source = (ROOT / "jobs" / f"{job}.py").read_text(encoding="utf-8")
            for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", rest):
                if flag != "--help" and f'"{flag}"' not in source:
                    unknown.append(f"jobs.{job} {flag}")
    assert not unknown, f"README uses flags the jobs do not define: {unknown}"


def test_readme_configs_and_make_targets_exist(readme):
    configs = set(re.findall(r"jobs/configs/[\w.-]+\.yaml", readme))
    assert {"jobs/configs/train_large.yaml", "jobs/configs/sweep_large.yaml"} <= configs
    assert not [c for c in configs if not (ROOT / c).is_file()]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    # `make x` in code: inside backticks, at the start of a code line, or after VAR=value.
    used = set(re.findall(r"(?:^|`|=\S+ )make ([a-z][\w-]*)", readme, flags=re.M))
    assert {"demo", "test", "check"} <= used
    assert used <= targets, f"README names make targets the Makefile lacks: {used - targets}"
