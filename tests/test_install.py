"""A non-editable install works away from the checkout: the wheel carries the default model, so
`rescore translate` and the README's main job (`rescore run` without -m) run from any directory."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv (seeing the test environment's torch etc.) with the package installed from a wheel
    built from a copy of the sources, so the checkout is left untouched; returns its bin
    directory."""
    pytest.importorskip("setuptools")  # the build backend, used without build isolation
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "nbest_rescore", src / "nbest_rescore", ignore=ignore)
    shutil.copytree(REPO / "data" / "models", src / "data" / "models")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", str(src), "-w", str(tmp / "w")]
    subprocess.run(build, check=True, cwd=tmp, capture_output=True)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    _see_outer_packages(venv)
    (wheel,) = (tmp / "w").glob("nbest_rescore-*.whl")
    bin_dir = venv / "bin"
    # --ignore-installed: the outer environment's own nbest_rescore (an editable install, seen
    # through the .pth) must neither satisfy the requirement nor be uninstalled
    install = [*pip, "--python", str(bin_dir / "python"), "install", "--no-deps", "--no-index",
               "--ignore-installed"]  # fmt: skip
    subprocess.run([*install, str(wheel)], check=True, capture_output=True)
    return bin_dir


def _outer_site_dirs() -> list[str]:
    """The site-packages directories of the interpreter running the tests (a venv's own, plus
    the base ones when that venv sees them; the user site where it is enabled)."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dirs if Path(d).is_dir()]


def _see_outer_packages(venv: Path) -> None:
    """Let the test venv import torch, typer, ... from the environment running the tests.

    `python -m venv --system-site-packages` is not enough: from inside a venv it exposes the
    *base* interpreter's site-packages, not the venv's, so in a fresh venv (`pip install -e
    '.[test]'`) the installed package could not import typer. Instead the inner venv gets a .pth
    file listing the outer interpreter's site directories, wherever they are. The lines are plain
    paths, so the .pth files inside them (the checkout's editable-install hook) are not run,
    and they come after the inner venv's own site-packages: the wheel's nbest_rescore wins."""
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "_outer_env.pth").write_text("\n".join(_outer_site_dirs()) + "\n")


def _run(bin_dir: Path, cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NBEST_RESCORE_MODELS")}
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, input=stdin, capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_installed_package_translates_from_another_directory(
    installed: Path, tmp_path: Path
) -> None:
    where = _run(installed, tmp_path, installed / "python", "-c",
                 "import nbest_rescore; print(nbest_rescore.__file__)")  # fmt: skip
    assert str(installed.parent) in where.stdout, where.stdout  # the wheel, not the checkout
    # The wheel carries the reranking weights `translate` uses by default with these models.
    assert (Path(where.stdout.strip()).parent / "models" / "rerank.json").is_file()
    res = _run(installed, tmp_path, installed / "rescore", "translate", "-q", "--beam", "2",
               stdin="A man in an orange hat.\n")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 1 and res.stdout.strip()


@pytest.mark.slow
def test_installed_package_runs_the_readme_job_with_the_shipped_model_and_weights(
    installed: Path, tmp_path: Path, slice_paths: dict[str, Path]
) -> None:
    res = _run(installed, tmp_path, installed / "rescore", "run", "--nbest", slice_paths["nbest"],
               "--src", slice_paths["src"], "--ref", slice_paths["ref"], "--out", "out", "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["final_system"] == "given" and s["tuning"]["weights_file"]["name"] == "weights.json"
    assert all("nbest_rescore/models/" in m["path"] for m in s["models"])
    assert {m["feature"] for m in s["models"]} == {"LSTM0", "R2L0"}
    assert "given" in res.stdout and "baseline" in res.stdout
