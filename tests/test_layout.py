"""The package layout must never shadow the standard library's `platform` module."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_platform_folder_has_no_init():
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_import_platform_is_stdlib_from_repo_root():
    code = (
        "import platform, sys, sysconfig, os\n"
        "stdlib = os.path.realpath(sysconfig.get_paths()['stdlib'])\n"
        "assert os.path.realpath(platform.__file__).startswith(stdlib), platform.__file__\n"
        "assert callable(platform.python_version)\n"
        "import steermoe, evaluators\n"
        "print(steermoe.__version__, evaluators.__name__)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0.1.0", "evaluators"]


def test_installed_package_resolves_without_pythonpath():
    # The editable install (make venv) must expose both packages with no PYTHONPATH at all.
    code = "import steermoe, evaluators, platform; print(platform.system())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Linux"
