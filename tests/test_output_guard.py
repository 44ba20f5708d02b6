"""Issue 27: outputs never destroy inputs or system files.

The family: every input of every command that writes files, given as (or reached from) every
output it writes: the same path, `dir/./x`, `dir/sub/../x`, a hard link, a symlink either way,
stdin/stdout redirected from/to it, an `--out` directory holding it under a name the command
writes (directly, linked, or through a symlinked directory). Each case must exit 2 naming both
options before any work, leaving every file as it was. Then the outputs that are not regular
files (devices, FIFOs, /dev/stdout, symlinks) and the four other findings of the same pass.

Root-only cases (device nodes made with mknod) are skipped where the process cannot make them;
the real /dev/null and /dev/full are used only where the process cannot replace them.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nbest_rescore.checkpoint import read_checkpoint
from nbest_rescore.cli import app
from nbest_rescore.errors import CheckpointError, InputError
from nbest_rescore.fileio import atomic_write, read_lines
from nbest_rescore.rerank_job import RerankJob, run_rerank_job
from nbest_rescore.tune import MAX_RESTARTS, MertConfig

DATA = Path(__file__).parent / "data"
runner = CliRunner()
Snapshot = dict[str, tuple[str, bytes | str]]


def snapshot(root: Path) -> Snapshot:
    """Every entry under `root` (links not followed): its kind and bytes or link target."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_file():
                out[rel] = ("file", p.read_bytes())
            else:
                out[rel] = ("dir", "")
    return out


@pytest.fixture
def inputs(tmp_path: Path, slice_checkpoint: Path) -> dict[str, Path]:
    """Real inputs in tmp_path/in: the Moses slice, its source and reference, a weights file,
    the tiny model, and tokenized corpora for training."""
    d = tmp_path / "in"
    d.mkdir()
    files = {
        "nbest": DATA / "test2016.head30.top20.nbest.gz",
        "src": DATA / "test2016.head30.en.gz",
        "ref": DATA / "test2016.head30.fr.gz",
        "tok_src": DATA / "test2016.head30.tok.en.gz",
        "tok_ref": DATA / "test2016.head30.tok.fr.gz",
        "model": slice_checkpoint,
        "tune_nbest": DATA / "test2016.head30.top20.nbest.gz",
        "tune_src": DATA / "test2016.head30.en.gz",
        "tune_ref": DATA / "test2016.head30.fr.gz",
    }
    out = {k: Path(shutil.copy(v, d / f"{k}{''.join(v.suffixes)}")) for k, v in files.items()}
    out["weights"] = d / "weights.json"
    out["weights"].write_text(json.dumps({"weights": {"total": 1.0, "LM0": 0.1}}))
    return out


def refused(args: list[str], root: Path, *names: str) -> None:
    """The command exits 2 naming each of `names`, and nothing under `root` changed."""
    before = snapshot(root)
    res = runner.invoke(app, args)
    assert res.exit_code == 2, f"exit {res.exit_code}: {res.output} {res.exception!r}"
    for n in names:
        assert n in res.stderr, (n, res.stderr)
    assert snapshot(root) == before


# ------------------------------------------------------------------ output files (rerank, translate)

FILE_COMMANDS: dict[str, tuple[str, dict[str, str]]] = {
    # command: (its output option, {input option: key of `inputs`})
    "rerank": ("--output", {"--nbest": "nbest", "--ref": "ref", "--weights": "weights"}),
    "translate": ("--output", {"--input": "src", "--ref": "ref", "--model": "model"}),
}


def _as_is(p: Path, _tmp: Path) -> tuple[str, str]:
    return str(p), str(p)


def _dotted(p: Path, _tmp: Path) -> tuple[str, str]:
    return str(p), os.path.join(str(p.parent), ".", p.name)


def _up_down(p: Path, _tmp: Path) -> tuple[str, str]:
    (p.parent / "sub").mkdir(exist_ok=True)
    return str(p), os.path.join(str(p.parent), "sub", "..", p.name)


def _hard_link(p: Path, tmp: Path) -> tuple[str, str]:
    os.link(p, tmp / "hard")
    return str(p), str(tmp / "hard")


def _output_links_to_input(p: Path, tmp: Path) -> tuple[str, str]:
    os.symlink(p, tmp / "link")
    return str(p), str(tmp / "link")


def _input_links_to_output(p: Path, tmp: Path) -> tuple[str, str]:
    os.symlink(p, tmp / "link")
    return str(tmp / "link"), str(p)


ALIASES: dict[str, Callable[[Path, Path], tuple[str, str]]] = {
    "same path": _as_is,
    "dir/./x": _dotted,
    "dir/sub/../x": _up_down,
    "hard link": _hard_link,
    "output is a symlink to the input": _output_links_to_input,
    "input is a symlink to the output": _input_links_to_output,
}


def _file_args(command: str, paths: dict[str, str], out: str) -> list[str]:
    output, options = FILE_COMMANDS[command]
    args = [command, "-q", output, out]
    for option, key in options.items():
        args += [option, paths[key]]
    return args


@pytest.mark.parametrize("alias", sorted(ALIASES))
@pytest.mark.parametrize(
    ("command", "option"),
    [(c, o) for c, (_, opts) in FILE_COMMANDS.items() for o in opts],
)
def test_an_input_as_the_output_file_is_refused(
    tmp_path: Path, inputs: dict[str, Path], command: str, option: str, alias: str
) -> None:
    key = FILE_COMMANDS[command][1][option]
    given, out = ALIASES[alias](inputs[key], tmp_path)
    paths = {k: str(v) for k, v in inputs.items()} | {key: given}
    refused(_file_args(command, paths, out), tmp_path, FILE_COMMANDS[command][0], option)


@contextlib.contextmanager
def fd1_appending_to(path: Path) -> Iterator[None]:
    """The process' real stdout (file descriptor 1, what /dev/stdout names) appending to `path`,
    as `>> path` would leave it."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(path, "ab") as fh:
            os.dup2(fh.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def test_stdin_redirected_from_the_output_is_refused(
    inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rescore rerank --nbest - -o L < L`."""
    nbest = inputs["nbest"]
    before = nbest.read_bytes()
    with open(nbest, encoding="latin-1") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        with pytest.raises(InputError, match=r"--output names .* --nbest - \(stdin\)"):
            run_rerank_job(RerankJob(nbest="-", output=str(nbest)))
    assert nbest.read_bytes() == before


def test_stdout_appending_to_an_input_is_refused(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rescore rerank --nbest L >> L` (and `-o /dev/stdout >> L`) would append the 1-best to the
    list it reads."""
    plain = tmp_path / "list.nbest"
    plain.write_bytes(gzip.decompress(inputs["nbest"].read_bytes()))
    before = plain.read_bytes()
    with open(plain, "a", encoding="utf-8") as stdout, monkeypatch.context() as patch:
        patch.setattr(sys, "stdout", stdout)
        with pytest.raises(InputError, match="--output names the same file as the input --nbest"):
            run_rerank_job(RerankJob(nbest=str(plain), output="-"))
    with fd1_appending_to(plain), pytest.raises(InputError, match="the input --nbest"):
        run_rerank_job(RerankJob(nbest=str(plain), output="/dev/stdout"))
    assert plain.read_bytes() == before


# ------------------------------------------------------------------ output directories

ORACLE_NAMES = (
    "summary.json",
    "report.md",
    "report.html",
    "chosen_ranks.png",
    "tables/systems.csv",
    "tables/systems.json",
    "best.tok.txt",
    "best.detok.txt",
    "scores.parquet",
)
RUN_NAMES = (
    "summary.json",
    "report.html",
    "oracle_at_k.png",
    "tables/weights.json",
    "best.tok.txt",
    "best.detok.txt",
    "weights.json",
    "nbest.with-lstm.gz",
    "scores.parquet",
    "scores.csv",
    "cache/0123456789abcdef/0123.npz",
)
TRAIN_NAMES = ("checkpoint_last.pt", "checkpoint_best.pt", "log.jsonl", "data/manifest.json")
DIR_COMMANDS: dict[str, tuple[str, tuple[str, ...], dict[str, str]]] = {
    # command: (its directory option, names written there, {input option: key of `inputs`})
    "oracle": ("--out", ORACLE_NAMES, {"--nbest": "nbest", "--ref": "ref", "--src": "src"}),
    "run": ("--out", RUN_NAMES, {"--nbest": "nbest", "--src": "src", "--ref": "ref",
            "--weights": "weights", "--tune-nbest": "tune_nbest", "--tune-src": "tune_src",
            "--tune-ref": "tune_ref", "--model": "model"}),
    "run --cache-dir": ("--cache-dir", ("0123456789abcdef/0123.npz",), {"--nbest": "nbest",
                        "--src": "src", "--model": "model"}),
    "train": ("--out", TRAIN_NAMES, {"--train-src": "src", "--train-tgt": "ref",
              "--valid-src": "tok_src", "--valid-tgt": "tok_ref"}),
    "prepare": ("--out", ("manifest.json", "train.en"), {"--train-src": "src",
                "--train-tgt": "ref", "--valid-src": "tok_src", "--valid-tgt": "tok_ref"}),
}  # fmt: skip
DIR_ALIASES = ("inside", "symlink in it", "hard link in it", "through a symlinked directory")


def _dir_args(command: str, paths: dict[str, str], option: str, given: str, out: str) -> list[str]:
    dir_option, _, options = DIR_COMMANDS[command]
    args = [command.split()[0], "-q", dir_option, out]
    if dir_option != "--out":
        args += ["--out", str(Path(out).parent / "out")]
    for o, key in options.items():
        args += [o, given if o == option else paths[key]]
    return args


def _pairs(options: list[str], names: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every option with some written name and every name with some option (not all pairs:
    the rule is one, and the cases must stay seconds)."""
    return [(options[k % len(options)], names[k % len(names)])
            for k in range(max(len(options), len(names)))]  # fmt: skip


@pytest.mark.parametrize("alias", DIR_ALIASES)
@pytest.mark.parametrize(
    ("command", "option", "name"),
    [
        (c, o, n)
        for c, (_, names, opts) in DIR_COMMANDS.items()
        for o, n in _pairs(list(opts), names)
    ],
)
def test_an_out_directory_holding_an_input_is_refused(
    tmp_path: Path, inputs: dict[str, Path], command: str, option: str, name: str, alias: str
) -> None:
    src = inputs[DIR_COMMANDS[command][2][option]]
    out = tmp_path / "out-dir"
    target = out / name
    target.parent.mkdir(parents=True)
    given = str(src)
    if alias == "inside":
        shutil.move(src, target)
        given = str(target)
    elif alias == "symlink in it":
        os.symlink(src, target)
    elif alias == "hard link in it":
        os.link(src, target)
    else:
        shutil.move(src, target)
        given = str(target)
        out = tmp_path / "linked-dir"
        os.symlink(tmp_path / "out-dir", out)
    paths = {k: str(v) for k, v in inputs.items()}
    args = _dir_args(command, paths, option, given, str(out))
    refused(args, tmp_path, DIR_COMMANDS[command][0], option)


def test_inputs_under_names_the_command_does_not_write_are_fine(
    tmp_path: Path, inputs: dict[str, Path]
) -> None:
    """`oracle` writes best.*.txt (the `--out` layout of `run`), not oracle.*.txt: a list saved
    under that name stays an input."""
    out = tmp_path / "rep"
    out.mkdir()
    nbest = Path(shutil.copy(inputs["nbest"], out / "oracle.tok.txt"))
    before = nbest.read_bytes()
    res = runner.invoke(app, ["oracle", "--nbest", str(nbest), "--ref", str(inputs["ref"]),
                              "--out", str(out), "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert nbest.read_bytes() == before
    assert len(read_lines(out / "best.detok.txt")) == 30


# ------------------------------------------------------------------ outputs that are not files


def _rerank_to(out: str | Path, nbest: Path) -> tuple[int, str]:
    res = runner.invoke(app, ["rerank", "--nbest", str(nbest), "-o", str(out), "-q"])
    return res.exit_code, res.stderr


def _device(tmp_path: Path, name: str, minor: int) -> Path:
    """A character device like /dev/`name` (mem major 1) of our own: the real one only where this
    process cannot replace it, else a node made with mknod, else a skip."""
    real = Path("/dev") / name
    if not os.access("/dev", os.W_OK) and real.exists():
        return real
    node = tmp_path / name
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")
    return node


def test_a_character_device_is_written_in_place_never_replaced(
    tmp_path: Path, inputs: dict[str, Path]
) -> None:
    null = _device(tmp_path, "null", 3)
    code, err = _rerank_to(null, inputs["nbest"])
    assert code == 0, err
    assert stat.S_ISCHR(os.lstat(null).st_mode) and os.stat(null).st_rdev == os.makedev(1, 3)
    link = tmp_path / "to-null"
    os.symlink(null, link)
    assert _rerank_to(link, inputs["nbest"])[0] == 0
    assert os.readlink(link) == str(null) and stat.S_ISCHR(os.lstat(null).st_mode)
    assert not list(tmp_path.glob(".*.tmp")) and not list(null.parent.glob(".null.*"))


def test_a_full_device_is_a_clear_error(tmp_path: Path, inputs: dict[str, Path]) -> None:
    full = _device(tmp_path, "full", 7)
    code, err = _rerank_to(full, inputs["nbest"])
    assert code == 2 and str(full) in err and "No space left" in err, err
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def test_a_block_device_is_refused_before_any_write(
    tmp_path: Path, inputs: dict[str, Path]
) -> None:
    node = tmp_path / "blk"
    try:  # a major number no driver has: opening it could not reach a disk
        os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(4095, 4095))
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")
    code, err = _rerank_to(node, inputs["nbest"])
    assert code == 2 and "block device" in err, err
    assert stat.S_ISBLK(os.lstat(node).st_mode)


def test_a_fifo_is_streamed_to(tmp_path: Path, inputs: dict[str, Path]) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    code, err = _rerank_to(fifo, inputs["nbest"])
    reader.join(timeout=60)
    assert code == 0, err
    assert got and got[0].decode().count("\n") == 30
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_dev_stdout_reaches_stdout(
    inputs: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """/dev/stdout is stdout, not a file to replace: what the shell put in a file that stdout
    appends to stays."""
    job = RerankJob(nbest=str(inputs["nbest"]), output="/dev/stdout")
    run_rerank_job(job)
    best = capfd.readouterr().out.split("\n")[:-1]
    assert len(best) == 30
    log = tmp_path / "log.txt"
    log.write_text("earlier line\n")
    with fd1_appending_to(log):
        run_rerank_job(job)
    assert log.read_text().split("\n")[:-1] == ["earlier line", *best]


def test_a_symlink_to_a_file_is_written_through(tmp_path: Path, inputs: dict[str, Path]) -> None:
    """The README's rule: the link stays, the file it leads to gets the output (atomically)."""
    real = tmp_path / "elsewhere" / "best.txt"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "best.txt"
    os.symlink(real, link)
    assert _rerank_to(link, inputs["nbest"])[0] == 0
    assert os.readlink(link) == str(real) and len(read_lines(real)) == 30
    dangling = tmp_path / "new.txt"
    os.symlink(tmp_path / "elsewhere" / "new-target.txt", dangling)
    assert _rerank_to(dangling, inputs["nbest"])[0] == 0
    assert (
        dangling.is_symlink() and len(read_lines(tmp_path / "elsewhere" / "new-target.txt")) == 30
    )


def test_a_symlink_loop_is_a_clear_error(tmp_path: Path, inputs: dict[str, Path]) -> None:
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    code, err = _rerank_to(loop, inputs["nbest"])
    assert code == 2 and str(loop) in err
    assert os.readlink(loop) == str(loop)


def test_atomic_write_to_dash_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    with atomic_write("-") as fh:
        fh.write("un chat\n")
    assert capsys.readouterr().out == "un chat\n"


# ------------------------------------------------------------------ the other four findings


def test_translate_checks_the_reference_before_translating(
    tmp_path: Path, inputs: dict[str, Path]
) -> None:
    short = tmp_path / "ref3.txt"
    short.write_text("\n".join(read_lines(inputs["ref"])[:3]) + "\n")
    out = tmp_path / "t.txt"
    args = ["translate", "-m", str(inputs["model"]), "--ref", str(short), "-o", str(out), "-q"]
    refused([*args, "-i", str(inputs["src"])], tmp_path, str(short), "3 lines", "has 30")
    res = runner.invoke(app, args, input="A man.\nTwo dogs.\n")
    assert res.exit_code == 2 and "<stdin> has 2" in res.stderr, res.stderr
    assert not out.exists()


def test_train_with_tiny_epochs_takes_one_step(tmp_path: Path, inputs: dict[str, Path]) -> None:
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--train-src", str(inputs["tok_src"]), "--train-tgt",
                              str(inputs["tok_ref"]), "--valid-src", str(inputs["tok_src"]),
                              "--valid-tgt", str(inputs["tok_ref"]), "--tokenized", "--preset",
                              "tiny", "--epochs", "1e-12", "--threads", "1", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "(1 steps" in res.stdout and "ppl inf" not in res.stdout
    best = read_checkpoint(out / "checkpoint_best.pt")
    assert best["train_info"]["step"] == 1 and best["train_info"]["valid_ppl"] < float("inf")


@pytest.mark.parametrize(
    ("option", "value", "command"),
    [("--restarts", str(MAX_RESTARTS + 1), "run"), ("--restarts", "1000000000000", "run"),
     ("--threads", "1025", "run"), ("--threads", "1000000", "translate"),
     ("--threads", str(2**31), "train")],
)  # fmt: skip
def test_bounded_options_are_refused_before_any_work(
    tmp_path: Path, inputs: dict[str, Path], option: str, value: str, command: str
) -> None:
    p = {k: str(v) for k, v in inputs.items()}
    out = str(tmp_path / "out")
    args = {
        "run": ["run", "--nbest", p["nbest"], "--src", p["src"], "-m", p["model"], "--out", out],
        "translate": ["translate", "-m", p["model"], "-i", p["src"], "-o", out],
        "train": ["train", "--train-src", p["tok_src"], "--train-tgt", p["tok_ref"],
                  "--valid-src", p["tok_src"], "--valid-tgt", p["tok_ref"], "--out", out],
    }[command]  # fmt: skip
    refused([*args, option, value, "-q"], tmp_path, option)


def test_mert_restarts_bound() -> None:
    assert MertConfig(restarts=MAX_RESTARTS).restarts == MAX_RESTARTS
    with pytest.raises(InputError, match="--restarts must be <= 1000"):
        MertConfig(restarts=MAX_RESTARTS + 1)


def test_a_checkpoint_load_out_of_memory_is_not_called_corrupt(
    inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a huge thread count did: the allocator failed inside torch.load."""

    def no_memory(*_a: object, **_k: object) -> None:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8")

    monkeypatch.setattr(torch, "load", no_memory)
    with pytest.raises(CheckpointError, match=r"out of memory") as err:
        read_checkpoint(inputs["model"])
    assert "corrupt" not in str(err.value)
