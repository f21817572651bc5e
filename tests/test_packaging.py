"""A non-editable install works: a wheel carried to an air-gapped machine has its catalogue.

The wheel is built from this checkout and installed into a fresh virtual environment that sees
the test environment's dependencies (through a path file) but not this checkout, and the
installed `localrag` runs from an unrelated folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    wheels = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(REPO)],
        check=True, capture_output=True, text=True,
    )
    wheel = next(wheels.glob("localrag-*.whl"))
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # dependencies from the test environment; a plain path line does not run its .pth hooks,
    # so the editable checkout stays invisible
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, text=True)
    return env_dir


def _run(env_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LOCALRAG_CATALOGUE")}
    env["LOCALRAG_HOME"] = str(cwd / "home")
    return subprocess.run([str(env_dir / "bin" / "localrag"), *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


@pytest.mark.slow
def test_installed_wheel_has_its_catalogue(installed, tmp_path):
    probe = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import localrag.settings as s; print(s.__file__); print(s.PACKAGED_CATALOGUE.read_bytes()[:0] == b'')"],
                           capture_output=True, text=True, cwd=tmp_path, check=True)
    where = probe.stdout.splitlines()[0]
    assert where.startswith(str(installed)), where  # the wheel's copy, not this checkout
    shipped = installed.glob("lib/python*/site-packages/localrag/data/models.toml")
    shipped = next(shipped)
    assert not shipped.is_symlink()
    assert tomllib.loads(shipped.read_text(encoding="utf-8")) == tomllib.loads((REPO / "models.toml").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_installed_wheel_runs_doctor_and_models_list(installed, tmp_path):
    doctor = _run(installed, "doctor", "--json", cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stderr
    plan = json.loads(doctor.stdout)
    assert plan["choice"] is not None
    listing = _run(installed, "models", "list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "r1-distill-qwen-1.5b" in listing.stdout.lower() or "Qwen-1.5B" in listing.stdout
