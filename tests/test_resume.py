"""Byte-identical outputs (issue 10): two clean `rescore run`s, and a clean run against runs killed
with SIGKILL at several points (or stopped by a full disk) and then resumed, write the same bytes
in every output file, except the timing and `created` fields of summary.json and the report."""

from __future__ import annotations

import gzip
import json
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nbest_rescore.fileio import read_lines

N_SENT = 120  # 6 chunks of 20 sentences
TIMING_KEYS = ("created", "timing")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The first 120 sentences of the real test2016 list (top 5 of each), source and reference."""
    data = Path(__file__).parent.parent / "data" / "multi30k"
    d = tmp_path_factory.mktemp("resume-in")
    nbest = [
        ln
        for ln in read_lines(data / "test2016.moses.top100.nbest.gz")
        if int(ln.split(" ", 1)[0]) < N_SENT
    ]
    (d / "nbest.gz").write_bytes(gzip.compress(("\n".join(nbest) + "\n").encode(), mtime=0))
    for name, f in (("src", "test2016.en.gz"), ("ref", "test2016.fr.gz")):
        (d / name).write_text("\n".join(read_lines(data / f)[:N_SENT]) + "\n")
    return {"nbest": d / "nbest.gz", "src": d / "src", "ref": d / "ref"}


def command(p: dict[str, Path], model: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "nbest_rescore", "run", "--nbest", str(p["nbest"]), "--src",
        str(p["src"]), "--ref", str(p["ref"]), "-m", str(model), "--max-hyps", "5",
        "--tune-nbest", str(p["nbest"]), "--tune-src", str(p["src"]), "--tune-ref",
        str(p["ref"]), "--restarts", "1", "--out", str(out), "-q",
    ]  # fmt: skip


def _strip(obj: Any) -> Any:
    """summary.json without its timing and creation-time fields."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def outputs(out: Path) -> dict[str, bytes]:
    """Every file under `out` (cache included), the summary and report normalised; hidden
    `.NAME.XXXX.tmp` files are not outputs (a killed run leaves the one it was writing)."""
    files = {}
    for f in sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")):
        data = f.read_bytes()
        if f.name == "summary.json":
            data = json.dumps(_strip(json.loads(data)), sort_keys=True).encode()
        elif f.name in ("report.md", "report.html"):
            data = b"\n".join(
                ln for ln in data.split(b"\n") if b'"created"' not in ln.replace(b"&quot;", b'"')
            )
        files[str(f.relative_to(out))] = data
    return files


def assert_same(a: Path, b: Path) -> None:
    fa, fb = outputs(a), outputs(b)
    assert sorted(fa) == sorted(fb)
    different = [name for name in fa if fa[name] != fb[name]]
    assert not different, different


@pytest.fixture(scope="module")
def clean(
    inputs: dict[str, Path], slice_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("clean") / "out"
    subprocess.run(command(inputs, slice_checkpoint, out), check=True, capture_output=True)
    return out


def n_chunks(out: Path) -> int:
    return len(list((out / "cache").glob("*/*.npz"))) if (out / "cache").exists() else 0


KILL_POINTS: dict[str, Callable[[Path], bool]] = {
    "after the first chunk": lambda out: n_chunks(out) >= 1,
    "half-way through scoring": lambda out: n_chunks(out) >= 3,  # 6 chunk files (dev = test)
    "while writing the outputs": lambda out: (out / "best.tok.txt").exists(),
}


@pytest.mark.slow
def test_two_clean_runs_are_byte_identical(
    clean: Path, inputs: dict[str, Path], slice_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "again"
    subprocess.run(command(inputs, slice_checkpoint, out), check=True, capture_output=True)
    assert_same(clean, out)
    # the augmented list's gzip header holds no name and no time
    raw = (out / "nbest.with-lstm.gz").read_bytes()
    assert raw[3] & 0x08 == 0 and raw[4:8] == b"\0\0\0\0"


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_kill_9_and_resume_is_byte_identical_to_a_clean_run(
    clean: Path, inputs: dict[str, Path], slice_checkpoint: Path, tmp_path: Path, point: str
) -> None:
    out = tmp_path / "out"
    cmd = command(inputs, slice_checkpoint, out)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reached = KILL_POINTS[point]
    while proc.poll() is None and not reached(out):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before the kill point"
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    hidden = [p.name for p in out.rglob(".*") if p.is_file()]
    assert all(n.endswith(".tmp") for n in hidden), hidden  # only the killed run's temp files
    assert_same(clean, out)


def _small_disk(limit: int) -> Callable[[], None]:
    def setup() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return setup


@pytest.mark.slow
def test_a_run_stopped_by_a_full_disk_resumes_once_there_is_space(
    clean: Path, inputs: dict[str, Path], slice_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    cmd = command(inputs, slice_checkpoint, out)
    # files up to 40 kB: the score chunks fit, the augmented list does not
    res = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_small_disk(40_000))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and str(out) in res.stderr
    assert "File too large" in res.stderr
    assert n_chunks(out) == 6
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    timing = json.loads((out / "summary.json").read_text())["scoring"]["timing"]
    assert timing["chunk_files_scored"] == 0  # nothing scored twice
    assert_same(clean, out)
