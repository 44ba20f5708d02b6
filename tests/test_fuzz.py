"""The fuzz suite of issue 10: real n-best lines mutated as a careless or hostile user would, and
random lines, weights and options (`hypothesis`), through every command.

The property, for every case: exit 0 with every sentence answered and numbers that agree with
sacrebleu, or exit 2 with a message naming the input (file or option); never exit 1, never a
traceback. Each case is tallied as "error" (a clear exit 2), "handled" (exit 0, checked) or "bad";
`test_zz_figures` prints the tally (`pytest -s tests/test_fuzz.py`) and requires no bad case.
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sacrebleu
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from nbest_rescore.checkpoint import read_checkpoint, save_checkpoint
from nbest_rescore.cli import app
from nbest_rescore.fileio import read_lines

DATA = Path(__file__).parent / "data"
LINES = read_lines(DATA / "test2016.head30.top20.nbest.gz")
REFS = read_lines(DATA / "test2016.head30.fr.gz")
SRCS = read_lines(DATA / "test2016.head30.en.gz")
TALLY: Counter[str] = Counter()
BAD: list[str] = []
runner = CliRunner()


def _record(case: str, outcome: str, why: str = "") -> None:
    TALLY["tried"] += 1
    TALLY[outcome] += 1
    if outcome == "bad":
        BAD.append(f"{case}: {why}")
        pytest.fail(f"{case}: {why}")


def _names_input(err: str, names: tuple[str, ...]) -> bool:
    return any(n in err for n in names) or "<stdin>" in err or bool(re.search(r"--[a-z]", err))


def _bleu(hyps: list[str], refs: list[str]) -> float:
    return float(sacrebleu.corpus_bleu(hyps, [refs]).score)


def check(
    case: str,
    args: list[str],
    names: tuple[str, ...],
    on_success: Callable[[str, str], str | None],
    stdin: bytes | None = None,
) -> None:
    """Run one case in-process and tally it; `on_success(stdout, stderr)` returns why an exit-0
    answer is wrong (None if it is right)."""
    res = runner.invoke(app, args, input=stdin)
    err = res.stderr
    if "PWNED" in res.output:
        _record(case, "bad", "a pickled call ran while loading a checkpoint")
        return
    if res.exit_code == 2:
        if "Traceback" in err or not _names_input(err, names):
            _record(case, "bad", f"exit 2 without naming the input: {err.strip()[:200]}")
        else:
            _record(case, "error")
        return
    if res.exit_code != 0 or "Traceback" in err:
        _record(case, "bad", f"exit {res.exit_code}: {err.strip()[:300]} {res.exception!r}")
        return
    why = on_success(res.stdout, err)
    _record(case, "bad" if why else "handled", why or "")


# ---------------------------------------------------------------------------- the commands


def stats_ok(stdout: str, _err: str) -> str | None:
    s = json.loads(stdout)
    return None if s["n_hypotheses"] > 0 or s["n_sentences"] == 0 else "stats without numbers"


def run_rerank(case: str, nbest: Path, tmp: Path, *extra: str) -> None:
    out = tmp / "best.txt"
    ref = tmp / "ref.txt"
    ref.write_text("\n".join(REFS) + "\n")

    def ok(_stdout: str, err: str) -> str | None:
        hyps = out.read_text(encoding="utf-8").split("\n")[:-1]
        if len(hyps) != len(REFS):
            return f"{len(hyps)} output lines for {len(REFS)} sentences"
        m = re.search(r"BLEU = ([\d.]+)", err)
        if m is None:
            return "no BLEU printed"
        if abs(float(m.group(1)) - round(_bleu(hyps, REFS), 2)) > 0.006:
            return f"printed BLEU {m.group(1)} != sacrebleu {_bleu(hyps, REFS):.2f}"
        return None

    args = ["rerank", "--nbest", str(nbest), "--ref", str(ref), "-o", str(out), "-q", *extra]
    check(f"rerank/{case}", args, (str(nbest),), ok)


def run_oracle(case: str, nbest: Path, tmp: Path, *extra: str) -> None:
    out = tmp / "oracle"

    def ok(_stdout: str, _err: str) -> str | None:
        s = json.loads((out / "summary.json").read_text())
        hyps = (out / "oracle.detok.txt").read_text(encoding="utf-8").split("\n")[:-1]
        if s["n_sentences"] != len(REFS) or len(hyps) != len(REFS):
            return f"{len(hyps)} oracle lines for {len(REFS)} sentences"
        if abs(s["systems"]["oracle"]["bleu"] - _bleu(hyps, REFS)) > 1e-6:
            return "oracle BLEU disagrees with sacrebleu"
        return None

    ref = tmp / "ref.txt"
    ref.write_text("\n".join(REFS) + "\n")
    args = ["oracle", "--nbest", str(nbest), "--ref", str(ref), "--out", str(out), "-q", *extra]
    check(f"oracle/{case}", args, (str(nbest),), ok)


def run_run(case: str, nbest: Path, tmp: Path, model: Path, *extra: str) -> None:
    out = tmp / "run"
    src, ref = tmp / "src.txt", tmp / "ref.txt"
    src.write_text("\n".join(SRCS) + "\n")
    ref.write_text("\n".join(REFS) + "\n")

    def ok(_stdout: str, _err: str) -> str | None:
        s = json.loads((out / "summary.json").read_text())
        hyps = (out / "best.detok.txt").read_text(encoding="utf-8").split("\n")[:-1]
        if len(hyps) != len(REFS):
            return f"{len(hyps)} output lines for {len(REFS)} sentences"
        if abs(s["systems"][s["final_system"]]["bleu"] - _bleu(hyps, REFS)) > 1e-6:
            return "final BLEU disagrees with sacrebleu"
        return None

    args = ["run", "--nbest", str(nbest), "--src", str(src), "--ref", str(ref), "-m",
            str(model), "--out", str(out), "-q", *extra]  # fmt: skip
    check(f"run/{case}", args, (str(nbest), str(src), str(ref), str(model)), ok)


# ------------------------------------------------------------------------ mutated real lines


def _field(i: int, value: str) -> Callable[[str], str]:
    def edit(line: str) -> str:
        parts = line.split(" ||| ")
        parts[i] = value
        return " ||| ".join(parts)

    return edit


def _feature_token(k: int, value: str) -> Callable[[str], str]:
    def edit(line: str) -> str:
        parts = line.split(" ||| ")
        toks = parts[2].split()
        toks[k] = value
        parts[2] = " ".join(toks)
        return " ||| ".join(parts)

    return edit


LINE_MUTATIONS: dict[str, Callable[[str], str]] = {
    "total nan": _field(3, "nan"),
    "total inf": _field(3, "inf"),
    "total -inf": _field(3, "-inf"),
    "total empty": _field(3, ""),
    "total text": _field(3, "abc"),
    "total 1e999": _field(3, "1e999"),
    "total hex": _field(3, "0x10"),
    "total huge": _field(3, "1e300"),
    "total -0": _field(3, "-0"),
    "feature nan": _feature_token(1, "nan"),
    "feature text": _feature_token(1, "x"),
    "feature inf": _feature_token(8, "inf"),
    "label renamed": _feature_token(0, "Other0="),
    "label dropped": _feature_token(7, "-1"),
    "label colon": _feature_token(0, "lr:"),
    "extra feature value": lambda ln: ln.replace("LM0= ", "LM0= 1 ", 1),
    "no features": _field(2, ""),
    "id negative": _field(0, "-1"),
    "id text": _field(0, "a"),
    "id float": _field(0, "3.0"),
    "id huge": _field(0, "1000000"),
    "id with spaces": _field(0, " 3 "),
    "empty surface": _field(1, ""),
    "surface of spaces": _field(1, "   "),
    "surface with tab": _field(1, "un\thomme"),
    "surface with pipes": _field(1, "un | homme || ."),
    "surface unicode": _field(1, "ü 𝔘 \u200b \u202e ﷽"),
    "surface nul": _field(1, "un\x00homme"),
    "surface 5000 tokens": _field(1, " ".join(["chapeau"] * 5000)),
    "three fields": lambda ln: ln.rsplit(" ||| ", 1)[0],
    "extra fields": lambda ln: ln + " ||| 0-1=0-2 ||| 0-0 1-1",
    "loose separators": lambda ln: ln.replace(" ||| ", "|||"),
    "crlf": lambda ln: ln + "\r",
    "only separators": lambda _ln: "||| ||| |||",
    "blank line": lambda _ln: "",
    "garbage": lambda _ln: "\x1b[31mnot an n-best line",
}
LINE_NUMBERS = (1, 57, 591)  # first line, a middle one (sentence 2), the last one


def mutated_file(tmp: Path, name: str, line_no: int) -> Path:
    lines = list(LINES)
    lines[line_no - 1] = LINE_MUTATIONS[name](lines[line_no - 1])
    p = tmp / "mutated.nbest"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


FILE_MUTATIONS: dict[str, Callable[[list[str]], bytes]] = {
    "empty file": lambda _l: b"",
    "one newline": lambda _l: b"\n",
    "bom": lambda lines: b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode(),
    "no final newline": lambda lines: "\n".join(lines).encode(),
    "invalid utf-8": lambda lines: ("\n".join(lines[:40]) + "\n").encode() + b"\xff\xfe\n",
    "truncated gzip": lambda lines: gzip.compress(("\n".join(lines) + "\n").encode())[:-300],
    "gzip of a gap": lambda lines: gzip.compress(
        ("\n".join(ln for ln in lines if not ln.startswith("4 |||")) + "\n").encode()
    ),
    "first sentence missing": lambda lines: (
        "\n".join(ln for ln in lines if not ln.startswith("0 |||")) + "\n"
    ).encode(),
    "last sentences missing": lambda lines: ("\n".join(lines[:100]) + "\n").encode(),
    "one line": lambda lines: (lines[0] + "\n").encode(),
    "ids decreasing": lambda lines: ("\n".join([*lines[30:60], *lines[:30]]) + "\n").encode(),
    "sentence split": lambda lines: (
        "\n".join([*lines[:5], *lines[25:30], *lines[5:25]]) + "\n"
    ).encode(),
    "duplicated list": lambda lines: ("\n".join(lines + lines) + "\n").encode(),
    "binary noise": lambda _l: bytes(range(256)) * 4,
}


@pytest.mark.parametrize("line_no", LINE_NUMBERS)
@pytest.mark.parametrize("name", sorted(LINE_MUTATIONS))
def test_mutated_lines_through_stats_rerank_and_oracle(
    tmp_path: Path, name: str, line_no: int
) -> None:
    nbest = mutated_file(tmp_path, name, line_no)
    case = f"{name}@{line_no}"
    check(f"stats/{case}", ["stats", str(nbest), "--json"], (str(nbest),), stats_ok)
    run_rerank(case, nbest, tmp_path)
    if line_no == 57:  # oracle's bootstrap costs more; one position is enough for it
        run_oracle(case, nbest, tmp_path)


@pytest.mark.parametrize("name", sorted(FILE_MUTATIONS))
def test_mutated_files_through_stats_rerank_and_oracle(tmp_path: Path, name: str) -> None:
    nbest = tmp_path / ("mutated.gz" if "gzip" in name else "mutated.nbest")
    nbest.write_bytes(FILE_MUTATIONS[name](list(LINES)))
    check(f"stats/{name}", ["stats", str(nbest), "--json"], (str(nbest),), stats_ok)
    run_rerank(name, nbest, tmp_path)
    run_oracle(name, nbest, tmp_path)


def test_mutated_lists_from_stdin(tmp_path: Path) -> None:
    for name in ("total nan", "id text", "empty surface", "crlf"):
        lines = list(LINES)
        lines[56] = LINE_MUTATIONS[name](lines[56])
        data = ("\n".join(lines) + "\n").encode()
        out = tmp_path / f"{len(TALLY)}.txt"
        check(
            f"rerank-stdin/{name}",
            ["rerank", "--nbest", "-", "-o", str(out), "-q"],
            ("<stdin>",),
            lambda _o, _e, out=out: (
                None  # type: ignore[misc]
                if len(out.read_text().split("\n")[:-1]) == 30
                else "wrong line count"
            ),
            stdin=data,
        )


RUN_CASES = ("total nan", "label dropped", "id huge", "empty surface", "surface 5000 tokens",
             "feature inf", "id text", "loose separators", "extra fields", "no features",
             "crlf", "surface unicode", "three fields")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", RUN_CASES)
def test_mutated_lines_through_run(tmp_path: Path, slice_checkpoint: Path, name: str) -> None:
    nbest = mutated_file(tmp_path, name, 57)
    run_run(name, nbest, tmp_path, slice_checkpoint, "--max-len", "1000")


@pytest.mark.slow
@pytest.mark.parametrize("name", ("gzip of a gap", "last sentences missing", "empty file"))
def test_mutated_files_through_run(tmp_path: Path, slice_checkpoint: Path, name: str) -> None:
    nbest = tmp_path / ("mutated.gz" if "gzip" in name else "mutated.nbest")
    nbest.write_bytes(FILE_MUTATIONS[name](list(LINES)))
    run_run(name, nbest, tmp_path, slice_checkpoint)


# --------------------------------------------------------------------- random (hypothesis)

NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["", "-", "1e", ".", "nan", "-inf", "1e-400", "0x1p3", "１", "٣"]),
)
TOKEN = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=8
)


@st.composite
def nbest_lines(draw: st.DrawFn) -> str:
    """Lines that look like Moses n-best lines, with random ids, surfaces, labels and numbers."""
    n = draw(st.integers(1, 12))
    ids = sorted(draw(st.lists(st.integers(0, 40), min_size=n, max_size=n)))
    out = []
    for i in ids:
        surface = " ".join(draw(st.lists(TOKEN, max_size=6)))
        labels = draw(st.lists(st.sampled_from(["LM0=", "TM0=", "w:", "Sp_a=", "x"]), max_size=3))
        feats = " ".join(f"{lab} {draw(NUMBER)}" for lab in labels)
        sep = draw(st.sampled_from([" ||| ", "|||", " |||  "]))
        fields = [draw(st.sampled_from([str(i), str(i), f" {i}", "x"])), surface, feats,
                  draw(NUMBER)]  # fmt: skip
        if draw(st.booleans()):
            fields.append(draw(TOKEN))
        out.append(sep.join(fields))
    return "\n".join(out) + draw(st.sampled_from(["\n", "", "\r\n"]))


FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


@FUZZ
@given(text=nbest_lines())
def test_random_lists_through_stats_and_rerank(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        nbest = tmp / "random.nbest"
        nbest.write_bytes(text.encode("utf-8", errors="surrogatepass"))
        check("stats/random", ["stats", str(nbest), "--json"], (str(nbest),), stats_ok)
        run_rerank("random", nbest, tmp)


WEIGHT = st.one_of(
    st.sampled_from(["LM0", "TranslationModel0", "total", "WordPenalty0", "Nope", "", "LM0.0"]),
    TOKEN,
).flatmap(lambda name: st.lists(NUMBER, max_size=5).map(lambda v: f"{name}={','.join(v)}"))


@FUZZ
@given(weights=st.lists(WEIGHT, min_size=1, max_size=3))
def test_random_weight_options_through_rerank(weights: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        nbest = tmp / "list.nbest"
        nbest.write_text("\n".join(LINES) + "\n")
        run_rerank("weights", nbest, tmp, *[a for w in weights for a in ("--weight", w)])


WEIGHTS_FILE = st.one_of(
    st.dictionaries(
        st.sampled_from(["LM0", "TranslationModel0", "total", "x", "Distortion0"]),
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.lists(st.floats(), max_size=5),
            st.text(max_size=3),
            st.booleans(),
            st.none(),
        ),
    ).map(lambda d: json.dumps({"weights": d})),
    st.lists(st.tuples(TOKEN, st.lists(NUMBER, max_size=4)), max_size=4).map(
        lambda rows: "\n".join(f"{k}= {' '.join(v)}" for k, v in rows)
    ),
    TOKEN,
)


@FUZZ
@given(content=WEIGHTS_FILE)
def test_random_weights_files_through_rerank(content: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        nbest = tmp / "list.nbest"
        nbest.write_text("\n".join(LINES) + "\n")
        w = tmp / "weights.txt"
        w.write_bytes(content.encode("utf-8", errors="surrogatepass"))
        res = runner.invoke(app, ["rerank", "--nbest", str(nbest), "--weights", str(w), "-q",
                                  "-o", str(tmp / "o.txt")])  # fmt: skip
        ok = res.exit_code == 0 or (res.exit_code == 2 and str(w) in res.stderr)
        _record("rerank/weights-file", "bad" if not ok else
                ("handled" if res.exit_code == 0 else "error"),
                f"exit {res.exit_code}: {res.stderr[:200]}")  # fmt: skip


OPTION_VALUE = st.one_of(
    st.integers(-3, 3).map(str), st.sampled_from(["nan", "inf", "-1e9", "1e9", "x", "", "0.5"])
)


@FUZZ
@given(option=st.sampled_from(["--max-hyps", "--tokenize", "--tgt-lang"]), value=OPTION_VALUE)
def test_random_oracle_options(option: str, value: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        nbest = tmp / "list.nbest"
        nbest.write_text("\n".join(LINES) + "\n")
        before = TALLY["tried"]
        run_oracle(f"{option}={value}", nbest, tmp, option, value)
        assert TALLY["tried"] == before + 1


# ---------------------------------------------------------------------------- checkpoints


def _payload_edit(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path, Path], None]:
    def make(good: Path, bad: Path) -> None:
        payload = read_checkpoint(good)
        edit(payload)
        save_checkpoint(bad, payload)

    return make


def _bytes_edit(edit: Callable[[bytes], bytes]) -> Callable[[Path, Path], None]:
    def make(good: Path, bad: Path) -> None:
        bad.write_bytes(edit(good.read_bytes()))

    return make


class _Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("PWNED",))


def _malicious(_good: Path, bad: Path) -> None:
    torch.save({"model": _Exploit()}, bad)


CHECKPOINTS: dict[str, Callable[[Path, Path], None]] = {
    "truncated": _bytes_edit(lambda b: b[: len(b) // 2]),
    "empty": _bytes_edit(lambda _b: b""),
    "random bytes": _bytes_edit(lambda b: bytes((x * 7 + 3) % 256 for x in b[:4096])),
    "flipped byte": _bytes_edit(lambda b: b[:2000] + bytes([b[2000] ^ 0xFF]) + b[2001:]),
    "malicious pickle": _malicious,
    "cut target vocabulary": _payload_edit(lambda p: p.update(tgt_vocab=p["tgt_vocab"][:-3])),
    "cut source vocabulary": _payload_edit(lambda p: p.update(src_vocab=p["src_vocab"][:-3])),
    "wider hidden": _payload_edit(lambda p: p["model_config"].update(hidden=7)),
    "nan weight": _payload_edit(lambda p: p["model"]["out.bias"].fill_(float("nan"))),
    "no model": _payload_edit(lambda p: p.pop("model")),
    "config a string": _payload_edit(lambda p: p.update(model_config="tiny")),
}


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_broken_checkpoints_through_run_and_translate(
    tmp_path: Path, slice_checkpoint: Path, name: str
) -> None:
    bad = tmp_path / "bad.pt"
    CHECKPOINTS[name](slice_checkpoint, bad)
    nbest = tmp_path / "list.nbest"
    nbest.write_text("\n".join(LINES) + "\n")
    run_run(f"checkpoint {name}", nbest, tmp_path, bad)
    out = tmp_path / "t.txt"
    check(
        f"translate/checkpoint {name}",
        ["translate", "-m", str(bad), "-o", str(out), "-q"],
        (str(bad),),
        lambda _o, _e: None if len(out.read_text().split("\n")[:-1]) == 2 else "line count",
        stdin=b"A man in an orange hat.\nTwo dogs.\n",
    )


def test_zz_figures() -> None:
    """The tally of the cases that ran before it (file order, so this test comes last; run
    alone, as `-k zz_figures`, it has none to tally and passes)."""
    print(
        f"\nfuzz: {TALLY['tried']} cases tried, {TALLY['error']} clear errors, "
        f"{TALLY['handled']} handled, {TALLY['bad']} bad"
    )
    assert not BAD, "\n".join(BAD)
