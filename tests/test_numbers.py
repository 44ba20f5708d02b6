"""The README, the study's RESULTS.md and the shipped model's card and records tell one set of
numbers: each figure the README quotes is read back from the record it comes from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
RESULTS = (ROOT / "pipelines" / "multi30k" / "RESULTS.md").read_text(encoding="utf-8")
CARD = (ROOT / "data" / "models" / "MODEL_CARD.md").read_text(encoding="utf-8")
WEIGHTS = json.loads((ROOT / "data" / "models" / "weights.json").read_text())
TRAINING = json.loads((ROOT / "data" / "models" / "training.json").read_text())


def one(pattern: str, text: str) -> str:
    """The single match of `pattern`'s group in `text` (a figure quoted twice must agree)."""
    found = set(re.findall(pattern, text, re.S))
    assert len(found) == 1, (pattern, found)
    return found.pop()


def card_bleu(system: str) -> str:
    return one(rf"\n\| {system} \| ([0-9.]+) \|", CARD)


def results_row(label: str) -> str:
    return one(rf"\n\| {re.escape(label)} \| ([0-9.]+) \|", RESULTS)


def test_the_shipped_default_is_the_cards_run() -> None:
    shipped = one(r"shipped `weights.json` \(an earlier MERT run[^|]*\| ([0-9.]+) ", README)
    assert shipped == card_bleu("tuned")
    dev = f"{WEIGHTS['tuning']['dev_bleu']:.2f}"
    assert one(r"same dev list, dev BLEU ([0-9.]+);", README) == dev
    assert one(r"dev BLEU ([0-9.]+) against", CARD.replace("\n", " ")) == dev


def test_the_study_rows_are_results_md() -> None:
    pair = "rescoring, attention LSTM + right-to-left feature: weights tuned on val (MERT)"
    assert one(r"the study's MERT run, dev BLEU [0-9.]+\) \| ([0-9.]+) ", README) == results_row(
        pair
    )
    study_dev = one(
        r"attention LSTM \+ right-to-left feature: tuned weights .*?dev BLEU ([0-9.]+)", RESULTS
    )
    assert one(r"the study's MERT run, dev BLEU ([0-9.]+)\)", README) == study_dev
    assert one(r"dev BLEU ([0-9.]+) against 60.74 in the study", README) == study_dev
    assert one(r"Moses phrase-based baseline \(1-best\) \| ([0-9.]+) \|", README) == card_bleu(
        "baseline"
    )


@pytest.mark.parametrize("k", ["100", "1000"])
def test_oracles_are_results_md(k: str) -> None:
    at_k = dict(re.findall(r"@(\d+) (\d+\.\d+)", one(r"Oracle@k \(([^\n]*)", RESULTS)))
    if k == "1000":
        assert one(r"corpus-level oracle of the 1000-best lists \| ([0-9.]+) \|", README) == at_k[k]
        assert card_bleu("oracle") == at_k[k]
    else:  # the main command's top-100 list
        assert one(r"oracles of this top-100 list \(corpus\s+oracle ([0-9.]+);", README) == at_k[k]


def test_scoring_rate_and_r2l_training_are_the_records() -> None:
    lo, hi = one(r"ran at (\d+) to (\d+) hypotheses/s", README.replace("\n", " "))
    rates = {int(r) for r in re.findall(r"at (\d+) hyp/s", RESULTS)}
    attention_rates = {r for r in rates if 400 <= r <= 600}
    assert {int(lo), int(hi)} == {min(attention_rates), max(attention_rates)}
    r2l = TRAINING["att-r2l"]
    assert one(r"stopped after (\d+) epochs", README) == f"{r2l['epochs_done']:.0f}"
    assert one(r"val perplexity ([0-9.]+), stopped after", README) == f"{r2l['best_valid_ppl']:.2f}"
    card = set(re.findall(r"Best validation perplexity ([0-9.]+) at epoch (\d+) of\s+(\d+)", CARD))
    assert card == {
        (f"{r['best_valid_ppl']:.2f}", f"{r['best_epoch']:.0f}", f"{r['epochs_done']:.0f}")
        for r in TRAINING.values()
        if isinstance(r, dict)
    }


def test_the_default_translators_cost_is_the_benchmark() -> None:
    rows = json.loads((ROOT / "bench" / "results" / "translators.json").read_text())["rows"]
    single, plain = rows["att-rev-1"], rows["att-rev-1 + att-rev-2"]
    default = rows["default (2-ensemble, reranked)"]
    text = re.sub(r"\s+", " ", README)
    ratio, fast, slow = re.findall(
        r"the reranked 2-ensemble took ([0-9.]+)x the time of `att-rev-1` alone \(([0-9.]+) "
        r"against ([0-9.]+) sentences/s",
        text,
    )[0]
    assert ratio == f"{default['time_ratio_over_att_rev_1']['median']:.1f}"
    assert (fast, slow) == (
        f"{default['sentences_per_s_median']:.2f}",
        f"{single['sentences_per_s_median']:.2f}",
    )
    bleu = one(r"included; ([0-9.]+ against [0-9.]+) BLEU on those sentences", text)
    assert bleu == f"{default['bleu']:.2f} against {single['bleu']:.2f}"
    plain_quote = one(r"the plain 2-ensemble ([0-9.]+x \([0-9.]+\))", text)
    assert (
        plain_quote == f"{plain['time_ratio_over_att_rev_1']['median']:.1f}x ({plain['bleu']:.2f})"
    )


def test_the_seed_spread_is_the_ceiling_section() -> None:
    seeds = one(r"\n\| shipped set \| [0-9., ]+ \| ([0-9., ]+) \|", RESULTS)
    a, b = (float(x) for x in seeds.split(","))
    spread = one(r"MERT's seed alone moves the shipped\s+pair's test2016 BLEU by ([0-9.]+)", README)
    assert spread == f"{abs(a - b):.2f}"


def test_the_students_row_is_results_md() -> None:
    row = one(
        r"\n\| distilled student \([^|]*\| int8 \| [0-9]+ \| ([0-9.]+ \|  \| [0-9.]+) \|", RESULTS
    )
    val, test = row.split(" |  | ")
    assert one(r"its best epoch, 4, val ([0-9.]+)\)", README) == val
    assert one(r"val [0-9.]+\), int8, beam 12 \| ([0-9.]+) \|", README) == test


def _bench(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text())


def test_the_peer_comparison_is_peers_json() -> None:
    rows = _bench("peers")["rows"]
    text = README.replace("\n", " ")

    def span(row: str) -> str:
        r = rows[row]["ratio_ours_over_peer"]
        return f"{r['min']:.2f}-{r['max']:.2f}x (median {r['median']:.2f}"

    assert (
        one(r"scoring the 1000-best lists of 30 test2016 sentences takes ([0-9.]+-[0-9.]+x)", text)
        == span("score_scoring").split(" (")[0]
    )
    assert one(r"a 1-sentence scoring run ([0-9.]+-[0-9.]+x \(median [0-9.]+)", text) == span(
        "start_scoring"
    )
    assert one(
        r"beam-12 translation of 300 sentences takes ([0-9.]+-[0-9.]+x \(median [0-9.]+)", text
    ) == span("beam12_translate")
    assert one(
        r"from raw text to detokenized text ([0-9.]+-[0-9.]+x \(median [0-9.]+)", text
    ) == span("beam12_translate_raw")
    payload = _bench("peers")
    assert (
        one(r"the same 1-best as the peer for ([0-9]+ of [0-9]+) sentences", text)
        == payload["beam12_same_1best_as_peer"]
    )
    assert (
        one(r"`--int8` translation ([0-9.]+-[0-9.]+x) of the peer", text)
        == (span("beam12_translate_int8").split(" (")[0])
    )
    per_token = float(one(r"to within 1e-5 nats per token, at most ([0-9.e-]+);", text))
    assert per_token == float(f"{payload['conversion_max_abs_diff_per_token']:.1e}") <= 1e-5
    helps = payload["rescore_help_s"]
    assert one(r"`rescore --help` takes ([0-9.]+-[0-9.]+) s", text) == (
        f"{min(helps):.2f}-{max(helps):.2f}"
    )


def test_the_step_op_figures_are_step_ops_json() -> None:
    text = README.replace("\n", " ")
    rows = _bench("step_ops")["rows"]
    cell = rows["LSTM cell, 768 rows x 512"]["ratio_new_over_old"]
    topk = rows["top 24 of 64 x (12 x 6567) continuations"]["ratio_new_over_old"]
    assert one(r"the cell takes ([0-9.]+)x its former time", text) == f"{cell:.2f}"
    assert one(r"written: ([0-9.]+)x the time of one `topk`", text) == f"{topk:.2f}"
    assert _bench("step_ops")["agreement"]["top_candidates_equal_scores"]


def test_the_packing_and_int8_figures_are_their_records() -> None:
    text = README.replace("\n", " ")
    gemm = _bench("gemm")
    ratio = gemm["search"]["median_ratio_over_none_packed"]["all packed"]
    assert one(r"in-process takes ([0-9.]+)x the time of MKL", text) == f"{ratio:.3f}"
    assert all(gemm["search"]["outputs_identical_to_none_packed"].values())
    out = gemm["rows"]["output layer, 768 x 512 @ 512 x 6567"]
    got = one(r"runs at ([0-9.]+ GFLOP/s packed against [0-9.]+)", text)
    assert got == f"{out['packed_gflops']} GFLOP/s packed against {out['addmm_gflops']}"
    full = _bench("int8")["default_translator_full_sets"]["rows"]
    quoted = one(r"loses ([0-9.]+ BLEU on val with it \([0-9.]+ -> [0-9.]+\))", text)
    val = full["val"]
    assert (
        quoted
        == f"{-val['change']:.2f} BLEU on val with it ({val['fp32']:.2f} -> {val['int8']:.2f})"
    )
    test = full["test2016"]
    assert one(r"and ([0-9.]+ on test2016 \([0-9.]+ -> [0-9.]+);", text) == (
        f"{-test['change']:.2f} on test2016 ({test['fp32']:.2f} -> {test['int8']:.2f}"
    )
