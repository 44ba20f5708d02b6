"""What a report says first (nbest_rescore.headline): the reading order of systems, and the
headline and console table of a real `rescore oracle` summary (the run's headline is checked
against its report page in test_run_job)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbest_rescore.headline import (
    BASELINE,
    ORACLES,
    bleu,
    cache_note,
    console_table,
    headline,
    ordered_rows,
    p_value,
    role,
    system_order,
)
from nbest_rescore.oracle_job import OracleJob, run_oracle_job

NAMES = st.lists(
    st.sampled_from([BASELINE, *ORACLES, "given", "tuned", "LSTM0", "R2L0", "even"]), unique=True
)


@pytest.fixture(scope="module")
def oracle_summary(
    slice_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("oracle")
    return run_oracle_job(OracleJob(str(slice_paths["nbest"]), str(slice_paths["ref"]), out))


@given(NAMES, st.sampled_from([None, "given", "tuned"]))
def test_system_order_is_baseline_output_components_then_oracles(
    names: list[str], output: str | None
) -> None:
    order = system_order(names, output)
    assert sorted(order) == sorted(names)
    roles = [role(n, output) for n in order]
    rank = {"baseline": 0, "output": 1, "component": 2, "oracle": 3}
    assert [rank[r] for r in roles] == sorted(rank[r] for r in roles)
    components = [n for n in names if role(n, output) == "component"]
    assert [n for n in order if role(n, output) == "component"] == components  # as they came


def test_ordered_rows_keep_each_rows_fields() -> None:
    rows = [{"system": "oracle", "bleu": 70.0}, {"system": "tuned", "bleu": 60.0},
            {"system": BASELINE, "bleu": 57.5}]  # fmt: skip
    out = ordered_rows(rows, "tuned")
    assert [(r["system"], r["role"], r["bleu"]) for r in out] == [
        (BASELINE, "baseline", 57.5), ("tuned", "output", 60.0), ("oracle", "oracle", 70.0)
    ]  # fmt: skip


def test_numbers_have_one_format() -> None:
    assert bleu(57.5349) == "57.53" and bleu(-0.004) == "-0.00"
    assert p_value(1 / 1001) == "0.0010"


def test_the_oracle_headline_reads_its_numbers_from_the_summary(
    oracle_summary: dict[str, Any],
) -> None:
    head = headline(oracle_summary)
    assert head is not None
    systems = oracle_summary["systems"]
    base, orc = systems[BASELINE]["bleu"], systems["oracle"]["bleu"]
    assert head.title == f"Oracle analysis: up to {orc:.2f} BLEU from this list, {orc - base:+.2f}"
    facts = head.facts()
    assert facts["baseline_bleu"].value == base and facts["oracle_bleu"].value == orc
    assert facts["oracle_gain"].value == pytest.approx(orc - base)
    assert facts["anti_oracle_bleu"].value == systems["anti_oracle"]["bleu"] < base
    assert f"{oracle_summary['n_hypotheses']:,} hypotheses" in head.lines[-1][0]


def test_the_console_table_lists_every_system_once_oracles_last_without_p(
    oracle_summary: dict[str, Any],
) -> None:
    lines = console_table(oracle_summary).splitlines()
    systems = oracle_summary["systems"]
    rows = [ln for ln in lines if ln[2:].split(" ")[0] in systems]
    assert [r[2:].split()[0] for r in rows] == system_order(systems, None)
    base = systems[BASELINE]["bleu"]
    for r in rows:
        name, value, *rest = r[2:].split()
        assert value == bleu(systems[name]["bleu"])
        if name != BASELINE:
            assert rest == [f"{systems[name]['bleu'] - base:+.2f}"]  # a gain, no p-value
    assert lines[-1] == oracle_summary["signature"]


def test_a_run_without_a_reference_has_a_headline_but_no_bleu() -> None:
    summary = {"systems": {}, "final_system": "given", "models": [], "n_sentences": 3}
    head = headline(summary)
    assert head is not None and "no BLEU" in head.title
    assert head.facts()["output"].value == "given"
    assert headline({"systems": {}}) is None


def test_the_cache_note_only_when_nothing_was_scored(oracle_summary: dict[str, Any]) -> None:
    def with_scored(n: int) -> dict[str, Any]:
        return {**oracle_summary, "scoring": {"timing": {"hyps_scored": n}}}

    assert cache_note(with_scored(10)) is None
    note = cache_note(with_scored(0), "cache")
    assert note is not None and "(cache)" in note
    assert cache_note({**with_scored(0), "n_hypotheses": 0}) is None
