"""The fuzz suite of issue 10: real n-best lines mutated as a careless or hostile user would, and
random lines, weights and options (`hypothesis`), through every command.

The property, for every case: exit 0 with every sentence answered and numbers that agree with
sacrebleu, or exit 2 with a message naming the input (file or option); never exit 1, never a
traceback. Each case is tallied as "error" (a clear exit 2), "handled" (exit 0, checked) or "bad";
`test_zz_figures` prints the tally (`pytest -s tests/test_fuzz.py`) and requires no bad case.
"""

from __future__ import annotations

import contextlib
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
from hypothesis import HealthCheck, example, given, settings
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
        hyps = (out / "best.detok.txt").read_text(encoding="utf-8").split("\n")[:-1]
        if s["n_sentences"] != len(REFS) or len(hyps) != len(REFS):
            return f"{len(hyps)} oracle lines for {len(REFS)} sentences"
        if abs(s["systems"]["oracle"]["bleu"] - _bleu(hyps, REFS)) > 1e-6:
            return "oracle BLEU disagrees with sacrebleu"
        return None

    ref = tmp / "ref.txt"
    ref.write_text("\n".join(REFS) + "\n")
    args = ["oracle", "--nbest", str(nbest), "--ref", str(ref), "--out", str(out), "-q", *extra]
    check(f"oracle/{case}", args, (str(nbest),), ok)


def rerank_reproduces_run(out: Path) -> str | None:
    """Why a run's outputs disagree: `rerank` of its augmented list with its `weights.json` must
    choose its 1-best (the README's promise), whatever the input's labels or ids."""
    again = out / "rerank-again.txt"
    res = runner.invoke(app, ["rerank", "--nbest", str(out / "nbest.with-lstm.gz"), "--weights",
                              str(out / "weights.json"), "-o", str(again), "-q"])  # fmt: skip
    if res.exit_code != 0:
        return f"rerank with the run's weights.json: exit {res.exit_code}: {res.stderr[:200]}"
    best = (out / "best.detok.txt").read_text(encoding="utf-8").split("\n")
    got = again.read_text(encoding="utf-8").split("\n")
    # the augmented list ends at the list's last sentence; the 1-best may go on (empty lines)
    if got[:-1] != best[: len(got) - 1] or any(best[len(got) - 1 : -1]):
        return "rerank with the run's weights.json chooses other hypotheses than the run"
    return None


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
        return rerank_reproduces_run(out)

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


@settings(FUZZ, max_examples=15)  # each case writes a report with plots (~1 s)
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


# ------------------------------------------------------- issue 23: families of a fresh pass

FEATURES = ("LM0", "WordPenalty0", "PhrasePenalty0", "Distortion0", "TranslationModel0", "total")
EXTREME = st.sampled_from(["inf", "-inf", "nan", "1e308", "-1e308", "1.7e308", "-1e300", "1e-320",
                           "0", "-0.5", "2"])  # fmt: skip


def _surfaces_by_sentence(lines: list[str]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for ln in lines:
        sid, surface = ln.split(" ||| ")[:2]
        out.setdefault(int(sid), set()).add("".join(surface.split()))
    return out


SURFACES = _surfaces_by_sentence(LINES)


def _own_hypotheses(out: Path) -> str | None:
    """Why the 1-best file `out` is wrong: a line that is not a hypothesis of its own sentence
    (compared without spaces: the file is detokenized)."""
    got = out.read_text(encoding="utf-8").split("\n")[:-1]
    if len(got) != len(SURFACES):
        return f"{len(got)} output lines for {len(SURFACES)} sentences"
    wrong = [i for i, h in enumerate(got) if "".join(h.split()) not in SURFACES[i]]
    return f"sentence {wrong[0]}: {got[wrong[0]]!r} is none of its hypotheses" if wrong else None


@FUZZ
@given(
    pairs=st.lists(
        st.tuples(st.sampled_from(FEATURES), EXTREME),
        min_size=1,
        max_size=4,
        unique_by=lambda p: p[0],
    ),
    as_file=st.booleans(),
)
@example(pairs=[("LM0", "1e308"), ("WordPenalty0", "-1e308")], as_file=False)  # inf - inf
@example(pairs=[("LM0", "1e308"), ("total", "1e308")], as_file=True)  # every score -inf
def test_extreme_weights_through_rerank(pairs: list[tuple[str, str]], as_file: bool) -> None:
    """Family 1: non-finite and extreme weights from `--weight` and `--weights`: a selection is
    always a hypothesis of its own sentence, and a non-finite score is exit 2 naming a weight."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        nbest = tmp / "list.nbest"
        nbest.write_text("\n".join(LINES) + "\n")
        out = tmp / "best.txt"
        if as_file:
            w = tmp / "weights.json"
            body = ", ".join(f'"{k}": {v.replace("inf", "Infinity").replace("nan", "NaN")}'
                             for k, v in pairs)  # fmt: skip
            w.write_text(f'{{"system": "given", "weights": {{{body}}}, "tuning": null}}')
            opts = ["--weights", str(w)]
        else:
            opts = [a for k, v in pairs for a in ("--weight", f"{k}={v}")]
        res = runner.invoke(app, ["rerank", "--nbest", str(nbest), "-o", str(out), "-q", *opts])
        names_weight = any(k in res.stderr for k, _ in pairs)
        if res.exit_code == 2:
            ok = names_weight and "Traceback" not in res.stderr
            _record("rerank/extreme weights", "error" if ok else "bad", res.stderr[:200])
        elif res.exit_code == 0:
            why = _own_hypotheses(out)
            _record("rerank/extreme weights", "bad" if why else "handled", why or "")
        else:
            _record("rerank/extreme weights", "bad", f"exit {res.exit_code}: {res.stderr[:200]}")


RUN_FEATURES = ("LSTM0", "Baseline0", "Length0", "LM0", "WordPenalty0")


@pytest.mark.slow
@settings(FUZZ, max_examples=10)
@given(
    pairs=st.lists(
        st.tuples(st.sampled_from(RUN_FEATURES), EXTREME), min_size=1, max_size=3,
        unique_by=lambda p: p[0],
    ),
    as_file=st.booleans(),
)  # fmt: skip
@example(pairs=[("LSTM0", "1e308"), ("Baseline0", "-1e308")], as_file=True)  # inf - inf
def test_extreme_weights_through_run(
    slice_checkpoint: Path, pairs: list[tuple[str, str]], as_file: bool
) -> None:
    """Family 1 through `run --weights` (a Moses weights file or a run's weights.json): the
    output is always a hypothesis of its own sentence, and a non-finite score or weight is
    exit 2 naming a weight."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        nbest, src, out = tmp / "list.nbest", tmp / "src.en", tmp / "run"
        nbest.write_text("\n".join(LINES) + "\n")
        src.write_text("\n".join(SRCS) + "\n")
        w = tmp / ("weights.json" if as_file else "moses.ini")
        if as_file:
            body = ", ".join(f'"{k}": {v.replace("inf", "Infinity").replace("nan", "NaN")}'
                             for k, v in pairs)  # fmt: skip
            w.write_text(f'{{"system": "given", "weights": {{{body}}}, "tuning": null}}')
        else:
            w.write_text("[weight]\n" + "".join(f"{k}= {v}\n" for k, v in pairs))
        res = runner.invoke(app, ["run", "--nbest", str(nbest), "--src", str(src), "-m",
                                  str(slice_checkpoint), "--weights", str(w), "--out", str(out),
                                  "-q"])  # fmt: skip
        if res.exit_code == 2:
            ok = any(k in res.stderr for k, _ in pairs) and "Traceback" not in res.stderr
            _record("run/extreme weights", "error" if ok else "bad", res.stderr[:200])
        elif res.exit_code == 0:
            why = _own_hypotheses(out / "best.detok.txt") or rerank_reproduces_run(out)
            _record("run/extreme weights", "bad" if why else "handled", why or "")
        else:
            _record("run/extreme weights", "bad", f"exit {res.exit_code}: {res.stderr[:200]}")


RUN_FIELDS = {"system": "given", "weights": {"LM0": 0.5, "total": 1.0}, "tuning": {"restarts": 2}}
JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6,
)  # fmt: skip


COLUMNS_VALUE = st.one_of(
    JSON_VALUE,
    st.dictionaries(st.text(max_size=6), st.sampled_from(["F0", "F3", "F17", "G1", "f2", "F", "F-1"]),
                    max_size=3),
)  # fmt: skip


def _wrong_type(field: str, value: object) -> bool:
    if field == "columns":  # feature name -> a column F<n>, no column twice
        return (
            not isinstance(value, dict)
            or any(not isinstance(v, str) or not re.fullmatch(r"F\d+", v) for v in value.values())
            or len(set(map(str, value.values()))) != len(value)
        )
    if field == "tuning":
        return not (value is None or isinstance(value, dict))
    if field == "system":
        return not isinstance(value, str)
    return not isinstance(value, dict) or any(  # weights: values must be numbers or lists
        isinstance(v, bool) or not isinstance(v, int | float | list) for v in value.values()
    )


@FUZZ
@given(
    field=st.sampled_from(["system", "weights", "tuning", "columns", "extra"]),
    value=COLUMNS_VALUE,
    key=st.text(st.characters(categories=("L", "N")), min_size=1, max_size=6),
)
def test_weights_json_schema_through_rerank(field: str, value: object, key: str) -> None:
    """Family 7: a run's `weights.json` with any field of a wrong type, or an extra key, is exit
    2 naming the file and the field; one of the right types is read."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        nbest = tmp / "list.nbest"
        nbest.write_text("\n".join(LINES) + "\n")
        obj: dict[str, object] = dict(RUN_FIELDS)
        name = f"x{key}" if field == "extra" else field
        obj[name] = value
        w = tmp / "weights.json"
        w.write_text(json.dumps(obj))
        out = tmp / "best.txt"
        res = runner.invoke(app, ["rerank", "--nbest", str(nbest), "--weights", str(w), "-q",
                                  "-o", str(out)])  # fmt: skip
        wrong = field == "extra" or _wrong_type(field, value)
        case = f"rerank/weights.json {field}={value!r}"
        if res.exit_code == 2 and str(w) in res.stderr:
            named = name in res.stderr or field == "weights"
            _record(case, "error" if named or not wrong else "bad", "field not named")
        elif res.exit_code == 0 and not wrong:
            _record(case, "handled")
        else:
            _record(case, "bad", f"exit {res.exit_code}: {res.stderr[:200]}")


FUZZ_FEW = settings(FUZZ, max_examples=12)  # cases that run three commands each


CONTROL = st.sampled_from(
    [chr(c) for c in (*range(0x00, 0x0A), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0))]
    + ["\r", "\xad", "\u200b", "\u200e", "\u2028", "\u2029", "\u202e", "\u2060", "\ufeff",
       "\U000e0041"]
)  # fmt: skip


@FUZZ_FEW
@given(ch=CONTROL, where=st.sampled_from(["nbest", "ref", "src"]), row=st.integers(0, 29),
       col=st.integers(0, 40))  # fmt: skip
def test_control_characters_are_refused_everywhere(ch: str, where: str, row: int, col: int) -> None:
    """Family 2: a control or invisible character anywhere in a hypothesis, reference or source
    line is exit 2 naming that file and line, through every command that reads the file."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        lines = {"nbest": list(LINES), "ref": list(REFS), "src": list(SRCS)}
        i = row * 20 if where == "nbest" else row  # the first hypothesis of sentence `row`
        text = lines[where][i]
        at = min(col, len(text))
        lines[where][i] = text[:at] + ch + text[at:]
        paths = {k: tmp / f"{k}.txt" for k in lines}
        for k, path in paths.items():
            path.write_bytes(("\n".join(lines[k]) + "\n").encode("utf-8"))
        nb, ref, src = (str(paths[k]) for k in ("nbest", "ref", "src"))
        commands = {
            "nbest": [["stats", nb, "--json"], ["rerank", "--nbest", nb, "-o", str(tmp / "o")],
                      ["oracle", "--nbest", nb, "--ref", ref, "--out", str(tmp / "or")]],
            "ref": [["rerank", "--nbest", nb, "--ref", ref, "-o", str(tmp / "o")],
                    ["oracle", "--nbest", nb, "--ref", ref, "--out", str(tmp / "or")]],
            "src": [["translate", "-m", "none", "--input", src, "-o", str(tmp / "o")]],
        }[where]  # fmt: skip
        for args in commands:
            if args[0] == "translate":
                continue  # needs a model; test_control_characters_through_run_and_translate
            res = runner.invoke(app, [*args, "-q"])
            ok = res.exit_code == 2 and f"{paths[where]}:{i + 1}:" in res.stderr
            _record(f"{args[0]}/control U+{ord(ch):04X} in {where}", "error" if ok else "bad",
                    f"exit {res.exit_code}: {res.stderr[:200]}")  # fmt: skip


@pytest.mark.parametrize("ch", ["\t", "\x00", "\ufeff", "\u200b", "\x85"])
def test_control_characters_through_run_and_translate(
    tmp_path: Path, slice_checkpoint: Path, ch: str
) -> None:
    """Family 2 through the model commands: a source line with a control character is refused
    by `run` (--src) and `translate` (--input and stdin), naming the line."""
    srcs = list(SRCS)
    srcs[4] = srcs[4][:6] + ch + srcs[4][6:]
    src = tmp_path / "src.txt"
    src.write_text("\n".join(srcs) + "\n", encoding="utf-8")
    nbest = tmp_path / "list.nbest"
    nbest.write_text("\n".join(LINES) + "\n")
    for args, name, stdin in (
        (["run", "--nbest", str(nbest), "--src", str(src), "-m", str(slice_checkpoint),
          "--out", str(tmp_path / "run")], str(src), None),
        (["translate", "-m", str(slice_checkpoint), "--input", str(src), "-o",
          str(tmp_path / "t.txt")], str(src), None),
        (["translate", "-m", str(slice_checkpoint), "-o", str(tmp_path / "t.txt")], "<stdin>",
         src.read_bytes()),
    ):  # fmt: skip
        res = runner.invoke(app, [*args, "-q"], input=stdin)
        ok = res.exit_code == 2 and f"{name}:5:" in res.stderr
        _record(f"{args[0]}/control U+{ord(ch):04X} in a source", "error" if ok else "bad",
                f"exit {res.exit_code}: {res.stderr[:200]}")  # fmt: skip


def test_bom_at_the_start_of_a_reference_is_skipped(tmp_path: Path) -> None:
    """Family 2: a BOM that starts a file is an encoding mark: the same BLEU as without it."""
    nbest = tmp_path / "list.nbest"
    nbest.write_text("\n".join(LINES) + "\n")
    printed = []
    for bom in ("", "\ufeff"):
        ref = tmp_path / "ref.txt"
        ref.write_text(bom + "\n".join(REFS) + "\n", encoding="utf-8")
        run_rerank(f"reference bom={bom!r}", nbest, tmp_path)
        res = runner.invoke(app, ["rerank", "--nbest", str(nbest), "--ref", str(ref), "-o",
                                  str(tmp_path / "o.txt")])  # fmt: skip
        printed.append(re.search(r"BLEU = ([\d.]+)", res.stderr))
    assert printed[0] and printed[1] and printed[0].group(1) == printed[1].group(1)


def _wrong_line_by_id(got: list[str], ids: list[int]) -> str | None:
    """The first output line that is wrong when the slice's sentence k has id `ids[k]`: a
    present id's line must be one of its hypotheses, any other line empty."""
    present = dict(zip(ids, range(len(ids)), strict=True))
    for n, h in enumerate(got):
        k = present.get(n)
        if (k is None and h) or (k is not None and "".join(h.split()) not in SURFACES[k]):
            return f"line {n + 1}: {h!r}"
    return None


@FUZZ_FEW
@given(
    start=st.sampled_from([0, 1, 7, 99_990, 100_001, 10**9, 2**62]),
    stride=st.sampled_from([1, 2, 3, 1000, 200_000]),
    jump=st.sampled_from([None, (5, 10**9), (29, 10**6), (0, 3)]),
)
def test_sentence_ids_offset_sparse_and_huge(
    start: int, stride: int, jump: tuple[int, int] | None
) -> None:
    """Family 3: ids not from 0, sparse ids and a huge id: never an allocation by id; exit 2
    naming the line, or every present id's output line is one of its hypotheses and every
    missing id's line is empty, in `stats`, `rerank` and `oracle` (whose --ref then disagrees)."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ids = [start + stride * i for i in range(30)]
        if jump is not None:
            ids[jump[0] :] = [x + jump[1] for x in ids[jump[0] :]]
        lines = [f"{ids[int(ln.split(' ||| ')[0])]} ||| {ln.split(' ||| ', 1)[1]}" for ln in LINES]
        nbest = tmp / "ids.nbest"
        nbest.write_text("\n".join(lines) + "\n")
        out = tmp / "best.txt"

        def ok(_o: str, _e: str) -> str | None:
            got = out.read_text(encoding="utf-8").split("\n")[:-1]
            if len(got) != ids[-1] + 1:
                return f"{len(got)} lines for ids up to {ids[-1]}"
            return _wrong_line_by_id(got, ids)

        check("stats/ids", ["stats", str(nbest), "--json"], (str(nbest),), stats_ok)
        check("rerank/ids", ["rerank", "--nbest", str(nbest), "-o", str(out), "-q"],
              (str(nbest),), ok)  # fmt: skip
        run_oracle("ids", nbest, tmp)


@settings(FUZZ, max_examples=6)
@given(
    start=st.sampled_from([0, 1, 5, 1000]),
    stride=st.sampled_from([1, 2, 7]),
    more=st.sampled_from([0, 0, 1, 3]),
    short=st.booleans(),
)
def test_sentence_ids_through_run(
    slice_checkpoint: Path, start: int, stride: int, more: int, short: bool
) -> None:
    """Family 3 through `run`: ids not from 0, sparse ids, a source with more lines than the
    list has sentences (or, `short`, one line too few): exit 2 naming the source, or a 1-best
    with one line per source line (each present id's line one of its hypotheses, the others
    empty), an augmented list with the input's ids, and `rerank` with the run's weights.json
    choosing the same."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ids = [start + stride * i for i in range(30)]
        n_src = ids[-1] + 1 + more - int(short)
        lines = [f"{ids[int(ln.split(' ||| ')[0])]} ||| {ln.split(' ||| ', 1)[1]}" for ln in LINES]
        nbest, src, out = tmp / "ids.nbest", tmp / "src.txt", tmp / "run"
        nbest.write_text("\n".join(lines) + "\n")
        by_id = dict(zip(ids, SRCS, strict=True))
        src.write_text("".join(by_id.get(i, "A dog runs .") + "\n" for i in range(n_src)))

        def ok(_o: str, _e: str) -> str | None:
            got = (out / "best.detok.txt").read_text(encoding="utf-8").split("\n")[:-1]
            if len(got) != n_src:
                return f"{len(got)} output lines for {n_src} source lines"
            if why := _wrong_line_by_id(got, ids):
                return why
            with gzip.open(out / "nbest.with-lstm.gz", "rt", encoding="utf-8") as fh:
                written = sorted({int(ln.split(" ||| ", 1)[0]) for ln in fh})
            if written != ids:
                return f"the augmented list has ids {written[:5]}..., the input {ids[:5]}..."
            return rerank_reproduces_run(out)

        check(f"run/ids start={start} stride={stride} more={more} short={short}",
              ["run", "--nbest", str(nbest), "--src", str(src), "-m", str(slice_checkpoint),
               "--out", str(out), "-q"], (str(src),), ok)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "label", ["LSTM0=", "R2L1=", "T2S0=", "Baseline0=", "Length0=", "own", "unlabelled"]
)
def test_feature_labels_of_a_run_through_run(
    tmp_path: Path, slice_checkpoint: Path, label: str
) -> None:
    """Family 4: a list already carrying a label `run` writes (or a run's own augmented list) is
    exit 2 naming the list; never an augmented list with a label twice. An unlabelled list gets
    unlabelled columns, and the run's weights.json still re-applies through `rerank`."""
    nbest = tmp_path / "list.nbest"
    if label == "own":
        nbest.write_text("\n".join(LINES) + "\n")
        first = runner.invoke(app, ["run", "--nbest", str(nbest), "--src", str(DATA /
                              "test2016.head30.en.gz"), "-m", str(slice_checkpoint), "--out",
                              str(tmp_path / "first"), "-q"])  # fmt: skip
        assert first.exit_code == 0, first.stderr
        nbest = tmp_path / "first" / "nbest.with-lstm.gz"
    elif label == "unlabelled":
        nbest.write_text("\n".join(re.sub(r"\S+= ", "", ln) for ln in LINES) + "\n")
    else:
        nbest.write_text("\n".join(ln.replace("Distortion0=", label) for ln in LINES) + "\n")

    def no_twice(_o: str, _e: str) -> str | None:
        with gzip.open(tmp_path / "run" / "nbest.with-lstm.gz", "rt") as fh:
            labels = [t for t in fh.readline().split(" ||| ")[2].split() if t.endswith("=")]
        if len(labels) != len(set(labels)):
            return f"labels twice: {labels}"
        return rerank_reproduces_run(tmp_path / "run")

    run_run(f"label {label}", nbest, tmp_path, slice_checkpoint)
    check(f"run/label {label} (augmented list)", ["run", "--nbest", str(nbest), "--src",
          str(DATA / "test2016.head30.en.gz"), "-m", str(slice_checkpoint), "--out",
          str(tmp_path / "run"), "-q"], (str(nbest),), no_twice)  # fmt: skip


CONFIG_VALUE = st.one_of(
    st.sampled_from(
        [0, -1, 10**9, 2**40, 2**16, 40_000, 1.5, 1.0, float("nan"), float("inf"), True, None, "4"]
    ),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
)


@FUZZ_FEW
@given(
    field=st.sampled_from(["layers", "hidden", "emb_dim", "dropout", "attention", "init_range",
                           "src_vocab_size", "tgt_vocab_size", "reverse_source"]),
    value=CONFIG_VALUE,
)  # fmt: skip
def test_checkpoint_config_fields_through_translate(
    slice_checkpoint: Path, field: str, value: object
) -> None:
    """Family 5: any field of a checkpoint's config out of range is exit 2 naming the file,
    before the model is built (a huge size must not allocate); one in range translates."""
    with tempfile.TemporaryDirectory() as d:
        bad = Path(d) / "bad.pt"
        payload = read_checkpoint(slice_checkpoint)
        payload["model_config"][field] = value
        save_checkpoint(bad, payload)
        out = Path(d) / "t.txt"
        check(
            f"translate/config {field}={value!r}",
            ["translate", "-m", str(bad), "-o", str(out), "-q", "--beam", "2"],
            (str(bad),),
            lambda _o, _e: None if len(out.read_text().split("\n")[:-1]) == 2 else "line count",
            stdin=b"A man in an orange hat.\nTwo dogs.\n",
        )


# ----------------------------------------------------------- family 6: special files and paths

SPECIAL_KINDS = ("directory", "devnull", "fifo", "spaced")
"""A directory, /dev/null, a FIFO fed once (as `<(zcat list.gz)` is), and a copy of the file
under a path with spaces and non-ASCII characters (the outputs go under such a path too)."""


def _commands(tmp: Path, model: Path) -> dict[str, tuple[list[str], dict[str, Path], str]]:
    """Per command: its arguments (`{option}` placeholders for the inputs, `{out}` for the
    output directory), the regular file of each input option, and its main output file."""
    nbest, src, ref, weights = tmp / "list.nbest", tmp / "src.en", tmp / "ref.fr", tmp / "w.json"
    nbest.write_text("\n".join(LINES) + "\n")
    src.write_text("\n".join(SRCS) + "\n")
    ref.write_text("\n".join(REFS) + "\n")
    weights.write_text('{"LM0": 0.1, "WordPenalty0": -0.2}')
    tok_src, tok_ref = tmp / "tok.en", tmp / "tok.fr"
    tok_src.write_bytes(gzip.decompress((DATA / "test2016.head30.tok.en.gz").read_bytes()))
    tok_ref.write_bytes(gzip.decompress((DATA / "test2016.head30.tok.fr.gz").read_bytes()))
    two = tmp / "two.en"
    two.write_text("A man in an orange hat.\nTwo dogs.\n")
    return {
        "stats": (["stats", "{nbest}", "--json"], {"nbest": nbest}, ""),
        "rerank": (["rerank", "--nbest", "{nbest}", "--ref", "{ref}", "--weights", "{weights}",
                    "-o", "{out}/best.txt", "-q"], {"nbest": nbest, "ref": ref,
                    "weights": weights}, "best.txt"),
        "oracle": (["oracle", "--nbest", "{nbest}", "--ref", "{ref}", "--src", "{src}", "--out",
                    "{out}/o", "-q"], {"nbest": nbest, "ref": ref, "src": src},
                   "o/best.detok.txt"),
        "run": (["run", "--nbest", "{nbest}", "--src", "{src}", "--ref", "{ref}", "--weights",
                 "{weights}", "-m", "{model}", "--out", "{out}/r", "-q"], {"nbest": nbest,
                 "src": src, "ref": ref, "weights": weights, "model": model},
                "r/best.detok.txt"),
        "translate": (["translate", "-m", "{model}", "-i", "{input}", "--ref", "{ref}", "-o",
                       "{out}/t.txt", "-q", "--beam", "2"], {"model": model, "input": two,
                       "ref": two}, "t.txt"),
        "prepare": (["prepare", "--train-src", "{train_src}", "--train-tgt", "{train_tgt}",
                     "--valid-src", "{valid_src}", "--valid-tgt", "{valid_tgt}", "--tokenized",
                     "--out", "{out}/p", "-q"], {"train_src": tok_src, "train_tgt": tok_ref,
                     "valid_src": tok_src, "valid_tgt": tok_ref}, "p/vocab.src.json"),
        "train": (["train", "--train-src", "{train_src}", "--train-tgt", "{train_tgt}",
                   "--valid-src", "{valid_src}", "--valid-tgt", "{valid_tgt}", "--tokenized",
                   "--preset", "tiny", "--epochs", "0.05", "--out", "{out}/t", "-q"],
                  {"train_src": tok_src, "train_tgt": tok_ref, "valid_src": tok_src,
                   "valid_tgt": tok_ref}, "t/data/train.tgt.ids"),
    }  # fmt: skip


def _invoke_guarded(args: list[str], fifos: list[Path], limit: float = 120.0) -> Any:
    """`runner.invoke` that cannot hang the suite: after `limit` seconds a reader blocked on
    one of `fifos` is released (a writer opens and closes it) and None is returned."""
    import os
    import threading

    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(runner.invoke(app, args)), daemon=True)
    t.start()
    t.join(limit)
    if not t.is_alive():
        return box[0]
    for f in fifos:  # EOF for a reader waiting for a writer
        with contextlib.suppress(OSError):
            os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
    t.join(30)
    return None


def _feed_once(fifo: Path, data: bytes) -> Callable[[], None]:
    """Start a writer that writes `data` into `fifo` once; returns what releases it if no
    reader ever came."""
    import os
    import threading

    def write() -> None:
        try:
            with open(fifo, "wb") as fh:
                fh.write(data)
        except OSError:
            pass

    t = threading.Thread(target=write, daemon=True)
    t.start()

    def release() -> None:
        if t.is_alive():
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
            t.join(10)

    return release


SPECIAL_CASES = [
    pytest.param(
        cmd, opt, kind, marks=[pytest.mark.slow] if cmd in ("run", "oracle", "train") else []
    )
    for cmd, opts in {
        "stats": ["nbest"],
        "rerank": ["nbest", "ref", "weights"],
        "oracle": ["nbest", "ref", "src"],
        "run": ["nbest", "src", "ref", "weights", "model"],
        "translate": ["model", "input", "ref"],
        "prepare": ["train_src", "train_tgt", "valid_src", "valid_tgt"],
        "train": ["train_src", "train_tgt", "valid_src", "valid_tgt"],
    }.items()
    for opt in opts
    for kind in SPECIAL_KINDS
]


PLAIN_OUTPUT: dict[str, Any] = {}


@pytest.mark.parametrize(("command", "option", "kind"), SPECIAL_CASES)
def test_special_files_and_paths(
    tmp_path: Path, slice_checkpoint: Path, command: str, option: str, kind: str
) -> None:
    """Family 6: every file option of every command, given a directory, /dev/null, a FIFO or
    a path with spaces and non-ASCII characters: exit 2 naming it, or the same output as from
    the plain file; never a hang, never an internal error."""
    import os

    tmpl, files, main = _commands(tmp_path, slice_checkpoint)[command]

    def invoke(values: dict[str, Path], out: Path, fifos: list[Path]) -> Any:
        out.mkdir(parents=True, exist_ok=True)
        args = [a.format(out=out, **{k: str(v) for k, v in values.items()}) for a in tmpl]
        return _invoke_guarded(args, fifos)

    if command not in PLAIN_OUTPUT:  # what the plain files give, once per command
        plain = invoke(files, tmp_path / "plain", [])
        assert plain is not None and plain.exit_code == 0, plain.stderr if plain else "hang"
        PLAIN_OUTPUT[command] = (tmp_path / "plain" / main).read_bytes() if main else plain.stdout
    values, out, release, fifos = dict(files), tmp_path / "case", lambda: None, []
    if kind == "directory":
        values[option] = tmp_path / "a-directory"
        values[option].mkdir()
    elif kind == "devnull":
        values[option] = Path("/dev/null")
    elif kind == "fifo":
        values[option] = tmp_path / "a-fifo"
        os.mkfifo(values[option])
        fifos.append(values[option])
        release = _feed_once(values[option], files[option].read_bytes())
    else:
        out = tmp_path / "un dossier é ñ 中"
        out.mkdir()
        values[option] = out / f"fichier à {files[option].name}"
        values[option].write_bytes(files[option].read_bytes())
    try:
        res = invoke(values, out, fifos)
    finally:
        release()
    case = f"{command}/--{option.replace('_', '-')} {kind}"
    if res is None:
        _record(case, "bad", "hang")
    elif res.exit_code == 2 and "Traceback" not in res.stderr:
        named = str(values[option]) in res.stderr or (
            kind == "devnull" and "/dev/null" in res.stderr
        )
        _record(case, "error" if named else "bad", f"exit 2 without the path: {res.stderr[:200]}")
    elif res.exit_code != 0 or "Traceback" in res.stderr:
        _record(case, "bad", f"exit {res.exit_code}: {res.stderr[:300]} {res.exception!r}")
    elif kind in ("fifo", "spaced"):
        same = ((out / main).read_bytes() if main else res.stdout) == PLAIN_OUTPUT[command]
        _record(
            case, "handled" if same else "bad", "" if same else "output differs from the file's"
        )
    else:
        _record(case, "handled")
