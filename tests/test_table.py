"""The n-best table: one pass over a real list, and sentences without hypotheses as one empty row
(the same CSR layout as the BLEU statistics)."""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from nbest_rescore.fileio import read_lines
from nbest_rescore.metrics import BleuConfig, compute_hyp_stats
from nbest_rescore.nbest_reader import NBestGroup, read_nbest
from nbest_rescore.nbest_writer import format_number
from nbest_rescore.rerank import rerank
from nbest_rescore.table import TOTAL, NBestTable, Surfaces, as_written, column_names, read_table

DATA = Path(__file__).parent / "data"
NBEST = DATA / "test2016.head30.top20.nbest.gz"


def table_from_groups(groups: Iterable[NBestGroup]) -> NBestTable:
    """The table built line by line from `read_nbest`'s objects: the reference for the
    block-built one (every line has the first line's dense layout here)."""
    first = None
    rows: list[tuple[float, ...]] = []
    surfaces: list[str] = []
    offsets, missing = [0], []
    for g in groups:
        for h in g.hyps:
            first = first or tuple((f.name, len(f.values)) for f in h.features)
            rows.append((h.total, *h.dense_vector()))
            surfaces.append(h.surface)
        if not g.hyps:
            rows.append(())
            surfaces.append("")
        missing.append(not g.hyps)
        offsets.append(len(rows))
    names = (TOTAL, *column_names(first or ()))
    values = np.asarray([r or (0.0,) * len(names) for r in rows], dtype=np.float64)
    return NBestTable(
        names,
        values.reshape(len(rows), len(names)),
        np.asarray(offsets, dtype=np.int64),
        np.asarray(missing, dtype=bool),
        Surfaces.of(surfaces),
    )


def test_table_holds_every_line_of_the_real_list() -> None:
    groups = list(read_nbest(NBEST))
    table = read_table(NBEST)
    hyps = [h for g in groups for h in g.hyps]
    assert table.n_sentences == 30 and table.n_hypotheses == len(hyps) == 591
    assert table.surfaces == tuple(h.surface for h in hyps)
    assert table.column(TOTAL).tolist() == [h.total for h in hyps]
    assert table.column("TranslationModel0.2").tolist() == [
        h.feature("TranslationModel0")[2] for h in hyps
    ]
    assert not table.missing.any()


def test_missing_sentences_get_one_empty_row_shared_with_bleu_stats(tmp_path: Path) -> None:
    lines = gzip.decompress(NBEST.read_bytes()).decode().splitlines()
    gap = tmp_path / "gap.nbest"
    gap.write_text("\n".join(ln for ln in lines if not ln.startswith("1 |||")) + "\n")
    refs = read_lines(DATA / "test2016.head30.fr.gz")
    table = read_table(gap).padded(len(refs) + 2)  # a gap at id 1 and two trailing ids
    assert table.missing.nonzero()[0].tolist() == [1, 30, 31]
    assert (table.counts[table.missing] == 1).all()
    choice = rerank(table, {TOTAL: 1.0})
    best = table.chosen_surfaces(choice)
    assert best[1] == best[30] == "" and best[0] == table.surfaces[0]
    hs = compute_hyp_stats(table.sentences(), [*refs, "x", "y"], BleuConfig())
    assert np.array_equal(hs.offsets, table.offsets)
    assert np.array_equal(hs.missing, table.missing)


def test_as_written_is_what_the_writer_prints() -> None:
    x = np.array([-12.345678912, 0.1 + 0.2, -100.0, 3e-9])
    assert [format_number(v) for v in as_written(x)] == [format_number(v) for v in x]
    assert as_written(x).tolist() == [float(format_number(v)) for v in x]


@pytest.mark.parametrize("n_sentences", [None, 30, 33])
def test_block_reader_builds_the_same_table_as_the_line_reader(
    tmp_path: Path, n_sentences: int | None
) -> None:
    """`read_table` builds the table from column blocks; it equals the per-line construction on
    the real slice with ids missing at the start, in the middle and at the end."""
    from nbest_rescore.nbest_reader import read_nbest_blocks
    from nbest_rescore.table import table_from_blocks

    lines = gzip.open(NBEST, "rt", encoding="utf-8").read().splitlines(keepends=True)
    gappy = tmp_path / "gaps.nbest"
    gappy.write_text(
        "".join(ln for ln in lines if int(ln.split(" ||| ")[0]) not in (0, 5, 29)),
        encoding="utf-8",
    )
    for path in (NBEST, gappy):
        a = table_from_groups(read_nbest(path, n_sentences=n_sentences))
        b = table_from_blocks(read_nbest_blocks(path, n_sentences=n_sentences), path, n_sentences)
        assert a.names == b.names and a.surfaces == b.surfaces
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.offsets, b.offsets)
        np.testing.assert_array_equal(a.missing, b.missing)
    assert b.missing.sum() >= 2


def test_surfaces_store_reads_back_every_row() -> None:
    """The compact surface store: rows (with empty and non-ASCII ones), slices, token counts
    by single spaces, padding."""
    from nbest_rescore.table import Surfaces

    texts = ["un chat .", "", "élan à l' été", "x", "a  b"]
    s = Surfaces.of(texts)
    assert len(s) == 5 and list(s) == texts and s == tuple(texts)
    assert [s[i] for i in range(5)] == texts and s[-1] == "a  b" and s[1:4] == texts[1:4]
    assert s.n_tokens().tolist() == [len(t.split(" ")) if t else 0 for t in texts]
    padded = s.padded(2)
    assert list(padded) == [*texts, "", ""]
    with pytest.raises(IndexError):
        s[5]


def test_table_of_the_real_slice_from_blocks_equals_per_line(tmp_path: Path) -> None:
    """The block-built table (compact surfaces, block-by-block copies) equals the per-line one,
    with missing ids and small blocks that split sentences."""
    from nbest_rescore.nbest_reader import read_nbest, read_nbest_blocks
    from nbest_rescore.table import table_from_blocks

    lines = gzip.open(NBEST, "rt", encoding="utf-8").read().splitlines(keepends=True)
    kept = [x for x in lines if not x.startswith(("3 |||", "4 |||", "17 |||"))]
    path = tmp_path / "gaps.nbest"
    path.write_text("".join(kept), encoding="utf-8")
    want = table_from_groups(read_nbest(path, n_sentences=32))
    got = table_from_blocks(read_nbest_blocks(path, n_sentences=32, block_bytes=3000), path, 32)
    assert got.names == want.names
    assert got.values.tobytes() == want.values.tobytes()
    assert got.offsets.tolist() == want.offsets.tolist()
    assert got.missing.tolist() == want.missing.tolist()
    assert list(got.surfaces) == list(want.surfaces)
    assert got.surfaces.n_tokens().tolist() == [len(s.split()) for s in want.surfaces]


def test_model_columns_fill_the_spare_room_or_a_copy_alike() -> None:
    """`run_job.add_model_features` writes into the columns `read_table(spare_columns=)` left
    free (no copy of the table) and gives the same table as when it has to copy."""
    from nbest_rescore.nbest_scorer import NBestScores
    from nbest_rescore.run_job import add_model_features
    from nbest_rescore.table import spare_view

    plain = read_table(NBEST)
    roomy = read_table(NBEST, spare_columns=3)
    assert roomy.values.tobytes() == plain.values.tobytes()
    width = len(roomy.names) + 3
    assert spare_view(roomy.values, width) is not None and spare_view(plain.values, width) is None
    n = plain.n_hypotheses
    rng = np.random.default_rng(0)
    scores = NBestScores(
        logprob=-rng.random((n, 2)) * 30,
        n_tokens=np.ones(n, dtype=np.int64),
        n_unk=np.zeros((n, 2), dtype=np.int64),
        offsets=plain.offsets,
        model_sha256=("a", "b"),
        tgt_oov_rate=(0.0, 0.0),
        src_oov_rate=(0.0, 0.0),
        escaped=True,
    )
    base = spare_view(roomy.values, width)
    a = add_model_features(plain, scores, ["LSTM0", "R2L0"])
    b = add_model_features(roomy, scores, ["LSTM0", "R2L0"])
    assert b.values is base  # filled in place
    assert (
        a.names == b.names
        and a.names[0] == "Baseline0"
        and a.names[-3:] == ("LSTM0", "R2L0", "Length0")
    )
    assert a.values.tobytes() == b.values.tobytes()
    assert a.column("Baseline0").tolist() == as_written(plain.column(TOTAL)).tolist()
    assert a.column("Length0").tolist() == plain.surfaces.n_tokens().tolist()


def test_augmented_list_refuses_a_list_that_changed_since_it_was_read(tmp_path: Path) -> None:
    """The augmented list is the input re-read: a sentence whose hypotheses are no longer the
    table's is an error naming the file and the sentence's first line, and nothing is written."""
    from nbest_rescore.errors import InputError
    from nbest_rescore.run_job import write_augmented

    table = read_table(NBEST)
    lines = gzip.decompress(NBEST.read_bytes()).decode().splitlines()
    of_2 = [i for i, ln in enumerate(lines) if ln.startswith("2 |||")]
    changed = tmp_path / "changed.nbest"
    changed.write_text("\n".join(ln for i, ln in enumerate(lines) if i != of_2[-1]) + "\n")
    out = tmp_path / "aug.gz"
    with pytest.raises(InputError) as err:
        write_augmented(str(changed), out, table, [TOTAL], {TOTAL: 1.0}, None)
    assert err.value.path == str(changed) and "sentence 2" in str(err.value)
    assert err.value.line == of_2[0] + 1  # the sentence's first line, 1-based
    assert not out.exists()
