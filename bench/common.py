"""Shared helpers for the benchmarks: machine description and writing bench/results/NAME.json."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATA_ENV = "MULTI30K_DIR"
"""The environment variable naming the Multi30k directory (its corpora and Moses 1000-best lists;
see pipelines/multi30k/): the repository ships only slices of it, so no path is assumed."""


def find_multi30k(given: Path | None = None) -> Path | None:
    """The Multi30k directory: `given`, else $MULTI30K_DIR, else None."""
    if given is not None:
        return given
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else None


def multi30k_dir(given: Path | None = None) -> Path:
    """`find_multi30k`, or exit with a message saying how to name it."""
    found = find_multi30k(given)
    if found is None or not found.is_dir():
        raise SystemExit(
            f"the Multi30k data directory {found or ''} is not there: give --data-dir DIR or set "
            f"{DATA_ENV}=DIR (the corpora and Moses 1000-best lists; see pipelines/multi30k/)"
        )
    return found


def _first_match(path: str, key: str) -> str | None:
    """The value of the first `key: value` line of a /proc file, if readable."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine_info() -> dict[str, Any]:
    """CPU, memory, OS, Python (and torch/GPU if torch is already imported) of this machine,
    plus the load average, since the figures depend on what else runs."""
    mem_kb = _first_match("/proc/meminfo", "MemTotal")
    info: dict[str, Any] = {
        "cpu": _first_match("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }
    torch = sys.modules.get("torch")  # never import torch just to describe the machine
    if torch is not None:
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def git_commit() -> dict[str, Any]:
    """`git rev-parse HEAD` of the repository and whether tracked files differ from it."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


def write_result(
    name: str, payload: dict[str, Any], *, merge: bool = False, path: Path | None = None
) -> Path:
    """Write bench/results/NAME.json (or `path`): `payload` plus git commit, date and (if
    absent) machine.

    With `merge=True`, top-level keys of an existing file that `payload` does not set are kept,
    so separate parts of one benchmark (e.g. "parse" and "oracle") can be run one at a time.
    """
    path = path or RESULTS / f"{name}.json"
    data: dict[str, Any] = {}
    if merge and path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
    data.update(payload)
    data.setdefault("machine", machine_info())
    data["git"] = git_commit()
    data["date"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
