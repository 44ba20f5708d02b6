"""What a report says first, from `summary.json` alone: the headline (the output system, its BLEU,
its gain over the baseline with the p-value, the oracle and the distance to it, the models), the
systems in reading order (baseline, output, components, oracles) and the console's table.

Everything here reads a summary dict, so the report page, `report.md`, the console and a test
that checks the page against `summary.json` cannot disagree about a number."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ORACLES = ("oracle", "oracle_sentence", "anti_oracle")
"""Selections made with the reference: bounds, not systems (no p-value, listed last)."""

BASELINE = "baseline"


@dataclass(frozen=True)
class Fact:
    """One number (or name) of the headline: its `summary.json`-derived value, shown as `text`."""

    key: str
    value: float | str
    text: str


Segment = str | Fact


@dataclass(frozen=True)
class Headline:
    """A title and a few lines, each a sequence of plain text and `Fact`s (rendered in bold, and
    in HTML tagged with `data-key`, so a test can read them back)."""

    title: str
    lines: tuple[tuple[Segment, ...], ...]

    def facts(self) -> dict[str, Fact]:
        return {s.key: s for line in self.lines for s in line if isinstance(s, Fact)}


def bleu(value: float) -> str:
    """The one format of BLEU points (scores, gains, gaps): two decimals."""
    return f"{value:.2f}"


def p_value(value: float) -> str:
    """The one format of p-values: four decimals (the smallest, 1/1001, reads 0.0010)."""
    return f"{value:.4f}"


def system_order(names: Iterable[str], output: str | None) -> list[str]:
    """Reading order: the baseline, the output, the other systems as they came, the oracles."""
    names = list(names)
    head = [n for n in (BASELINE, output) if n is not None and n in names]
    oracles = [n for n in ORACLES if n in names]
    return [*head, *(n for n in names if n not in head and n not in oracles), *oracles]


def role(name: str, output: str | None) -> str:
    """A system's part in the report: baseline, output, component or oracle (a bound)."""
    if name == BASELINE:
        return "baseline"
    if name == output:
        return "output"
    return "oracle" if name in ORACLES else "component"


def _depth(summary: dict[str, Any]) -> str:
    """The list depth the oracle saw, from oracle@k's last k (e.g. 'top 100')."""
    ks = [int(k) for k in summary.get("oracle_at_k", {})]
    return f"up to {max(ks)} hypotheses a sentence" if ks else "the whole list"


def _models(summary: dict[str, Any]) -> tuple[Segment, ...]:
    models = summary.get("models") or []
    if not models:
        return ()
    parts: list[Segment] = ["Models: "]
    for i, m in enumerate(models):
        parts += [
            "; " if i else "",
            Fact(f"model.{m['feature']}", Path(str(m["path"])).name, f"{m['feature']}"),
            f" = {Path(str(m['path'])).name} ({m.get('kind', 'model')}, sha256 {m['sha256'][:12]}...)",
        ]
    return (*parts, ".")


def _significance_text(summary: dict[str, Any], system: str) -> tuple[Segment, ...]:
    sig = summary.get("significance", {}).get(system)
    if sig is None or sig.get("p_value") is None:
        return ()
    test = summary.get("significance_test", {})
    floor = test.get("p_floor")
    note = f" (paired bootstrap, {test.get('resamples', '?')} resamples, two-sided" + (
        "; the smallest p this test can give)"
        if floor is not None and sig["p_value"] <= floor
        else ")"
    )
    return (", p = ", Fact("p_value", sig["p_value"], p_value(sig["p_value"])), note)


def _run_lines(summary: dict[str, Any], output: str) -> list[tuple[Segment, ...]]:
    systems = summary["systems"]
    out, base = systems[output]["bleu"], systems[BASELINE]["bleu"]
    gain = out - base
    lines: list[tuple[Segment, ...]] = [
        (
            "Output system ",
            Fact("output", output, output),
            ": ",
            Fact("output_bleu", out, bleu(out)),
            " BLEU (its choices are best.detok.txt).",
        ),
        (
            "Gain over the baseline (the decoder's 1-best, ",
            Fact("baseline_bleu", base, bleu(base)),
            " BLEU): ",
            Fact("gain", gain, f"{gain:+.2f}"),
            " BLEU",
            *_significance_text(summary, output),
            ".",
        ),
    ]
    if "oracle" in systems:
        orc = systems["oracle"]["bleu"]
        share = (out - base) / (orc - base) if orc > base else float("nan")
        lines.append(
            (
                f"Oracle of this list (corpus-level, {_depth(summary)}): ",
                Fact("oracle_bleu", orc, bleu(orc)),
                " BLEU; the output is ",
                Fact("oracle_gap", orc - out, bleu(orc - out)),
                f" BLEU below it ({share:.0%} of the way from the baseline).",
            )
        )
    changed = summary.get("changed_vs_baseline")
    if changed:
        lines.append(
            (
                f"Rescoring changed the 1-best of {changed['sentences']} of "
                f"{summary['n_sentences']} sentences: a better sentence BLEU in "
                f"{changed['better']}, a worse one in {changed['worse']} (examples below).",
            )
        )
    return lines


def headline(summary: dict[str, Any]) -> Headline | None:
    """The headline of a `run` or `oracle` summary; None for a summary that has neither an output
    system nor an oracle (a report of something else)."""
    systems = summary.get("systems", {})
    output = summary.get("final_system")
    size = (
        f"{summary.get('n_sentences', 0):,} sentences, {summary.get('n_hypotheses', 0):,} "
        f"hypotheses; BLEU {summary.get('signature', '')}."
    )
    models = _models(summary)
    if output is not None and output in systems and BASELINE in systems:
        out, base = systems[output]["bleu"], systems[BASELINE]["bleu"]
        title = f"{output}: {bleu(out)} BLEU, {out - base:+.2f} over the baseline"
        lines = _run_lines(summary, output)
    elif output is not None:  # a run without --ref
        title = f"Rescored with {len(summary.get('models') or [])} model(s); no --ref, no BLEU"
        lines = [("Output system ", Fact("output", output, output), " (best.detok.txt).")]
    elif BASELINE in systems and "oracle" in systems:  # rescore oracle
        base, orc = systems[BASELINE]["bleu"], systems["oracle"]["bleu"]
        title = f"Oracle analysis: up to {bleu(orc)} BLEU from this list, {orc - base:+.2f}"
        lines = [
            (
                "Baseline (the decoder's 1-best): ",
                Fact("baseline_bleu", base, bleu(base)),
                " BLEU.",
            ),
            (
                f"Corpus-level oracle ({_depth(summary)}): ",
                Fact("oracle_bleu", orc, bleu(orc)),
                " BLEU, ",
                Fact("oracle_gain", orc - base, f"{orc - base:+.2f}"),
                " over the baseline: the most any reranker of this list could gain "
                "(best.detok.txt holds its choices).",
            ),
        ]
        if "anti_oracle" in systems:
            floor = systems["anti_oracle"]["bleu"]
            lines.append(
                ("Anti-oracle (a floor): ", Fact("anti_oracle_bleu", floor, bleu(floor)), " BLEU.")
            )
    else:
        return None
    return Headline(title, tuple((*lines, *([models] if models else []), (size,))))


def console_table(summary: dict[str, Any]) -> str:
    """The systems' BLEU for the terminal: the headline's title, then the systems in reading order,
    the output marked, with the gain over the baseline and its p-value (none for the oracles)."""
    systems = summary["systems"]
    output = summary.get("final_system")
    sig = summary.get("significance", {})
    base = systems.get(BASELINE, {}).get("bleu")
    head = headline(summary)
    lines = [head.title, ""] if head is not None else []
    lines.append(f"  {'system':<24} {'BLEU':>7} {'gain':>7}  p-value vs baseline")
    for name in system_order(systems, output):
        b = systems[name]["bleu"]
        p = sig.get(name, {}).get("p_value") if name not in ORACLES else None
        gain = "" if base is None or name == BASELINE else f"{b - base:+.2f}"
        mark = "*" if name == output else " "
        label = f"{name} (output)" if name == output else name
        row = f"{mark} {label:<24} {bleu(b):>7} {gain:>7}  {'' if p is None else p_value(p)}"
        lines.append(row.rstrip())
    test = summary.get("significance_test")
    if test:
        lines.append(
            f"* the output (best.detok.txt). p: paired bootstrap, {test['resamples']} resamples, "
            f"two-sided (smallest possible {p_value(test['p_floor'])}); oracles use the reference, "
            "so they get none."
        )
    lines.append(summary.get("signature", ""))
    return "\n".join(lines)


def cache_note(summary: dict[str, Any], cache_dir: str | Path | None = None) -> str | None:
    """What to say when a run scored nothing because every score came from the cache."""
    timing = summary.get("scoring", {}).get("timing", {})
    if not summary.get("n_hypotheses") or timing.get("hyps_scored", 1) != 0:
        return None
    where = f" ({cache_dir})" if cache_dir is not None else ""
    return (
        f"every score came from the cache{where}: no hypothesis was scored again "
        "(weights, selections and the report were recomputed)"
    )


def ordered_rows(rows: Sequence[dict[str, Any]], output: str | None) -> list[dict[str, Any]]:
    """Table rows with a `system` key in reading order, with their `role`."""
    by_name = {r["system"]: r for r in rows}
    return [
        {
            "system": n,
            "role": role(n, output),
            **{k: v for k, v in by_name[n].items() if k != "system"},
        }
        for n in system_order(by_name, output)
    ]
