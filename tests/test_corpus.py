"""Token-id corpora (nbest_rescore.corpus): ragged arrays against plain lists, padding (forwards
and reversed), the smallest dtypes, and the identity of a prepared corpus."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbest_rescore.corpus import (
    MANIFEST,
    DataSettings,
    EncodedCorpus,
    IdFile,
    PreparedData,
    Ragged,
    data_key,
    id_dtype,
    length_dtype,
    read_manifest,
)
from nbest_rescore.errors import InputError
from nbest_rescore.fileio import read_lines
from nbest_rescore.text import TokenizerConfig
from nbest_rescore.validate import OptionError
from nbest_rescore.vocab import PAD, Vocab

DATA = Path(__file__).parent / "data"
SEQS = st.lists(st.lists(st.integers(4, 60_000), max_size=7), max_size=8)


def real_ids() -> tuple[list[list[int]], list[list[int]]]:
    """The real tokenised slice (30 pairs) as ids."""
    src = [s.split() for s in read_lines(DATA / "test2016.head30.tok.en.gz")]
    tgt = [t.split() for t in read_lines(DATA / "test2016.head30.tok.fr.gz")]
    sv, tv = Vocab.build(src), Vocab.build(tgt)
    return [sv.encode(s) for s in src], [tv.encode(t) for t in tgt]


@settings(max_examples=60, deadline=None)
@given(seqs=SEQS, room=st.integers(0, 2), reverse=st.booleans(), data=st.data())
def test_padded_rows_are_the_sequences_right_padded(
    seqs: list[list[int]], room: int, reverse: bool, data: st.DataObject
) -> None:
    r = Ragged.from_lists(seqs)
    assert len(r) == len(seqs) and r.n_tokens() == sum(map(len, seqs))
    assert [r[i].tolist() for i in range(len(r))] == seqs
    rows = data.draw(st.lists(st.integers(0, max(0, len(seqs) - 1)), max_size=5)) if seqs else []
    got = r.padded(np.array(rows, dtype=np.int64), reverse=reverse, room=room)
    width = max(1, max((len(seqs[i]) for i in rows), default=0) + room)
    want = [(seqs[i][::-1] if reverse else seqs[i]) + [PAD] * (width - len(seqs[i])) for i in rows]
    assert got.dtype == np.int64 and got.shape == (len(rows), width)
    assert got.tolist() == want


def test_the_real_slice_as_a_corpus() -> None:
    src, tgt = real_ids()
    corpus = EncodedCorpus.from_lists(src, tgt)
    assert len(corpus) == 30
    assert corpus.n_tokens() == (sum(map(len, src)), sum(map(len, tgt)))
    assert [corpus.tgt[i].tolist() for i in range(30)] == tgt
    rows = np.arange(30)
    assert corpus.src.padded(rows, reverse=True)[:, 0].tolist() == [s[-1] for s in src]
    with pytest.raises(ValueError, match="30 source and 29 target"):
        EncodedCorpus.from_lists(src, tgt[:-1])


def test_dtypes_are_the_smallest_that_hold_the_values() -> None:
    assert id_dtype(1 << 16) == np.uint16 and id_dtype((1 << 16) + 1) == np.int32
    for longest, dt in [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65_535, np.uint16),
                        (65_536, np.uint32), (2**32, np.uint64)]:  # fmt: skip
        assert length_dtype(longest) == dt
        assert np.array([longest]).astype(length_dtype(longest))[0] == longest


def test_the_key_changes_with_every_setting_and_input_but_not_their_order() -> None:
    base = DataSettings()
    hashes = {"train_src": "a" * 64, "train_tgt": "b" * 64}
    key = data_key(base, hashes)
    assert data_key(DataSettings(), dict(reversed(hashes.items()))) == key
    changed = [
        dataclasses.replace(base, src_lang="de"), dataclasses.replace(base, tokenized=True),
        dataclasses.replace(base, escape=True), dataclasses.replace(base, lowercase=True),
        dataclasses.replace(base, src_vocab_size=None), dataclasses.replace(base, tgt_vocab_size=9),
        dataclasses.replace(base, vocab_min_count=2), dataclasses.replace(base, max_len=None),
    ]  # fmt: skip
    keys = {data_key(s, hashes) for s in changed} | {data_key(base, {**hashes, "train_src": "c"})}
    assert len(keys) == len(changed) + 1 and key not in keys


def test_settings_check_their_bounds_and_name_the_tokenisers() -> None:
    s = DataSettings(src_lang="en", tgt_lang="fr", escape=True)
    assert s.tokenizers() == (
        TokenizerConfig("en", escape=True),
        TokenizerConfig("fr", escape=True),
    )
    assert DataSettings(tokenized=True).tokenizers() == (None, None)
    assert DataSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    for field in ("src_vocab_size", "tgt_vocab_size", "vocab_min_count", "max_len"):
        with pytest.raises(OptionError, match=f"--{field.replace('_', '-')} must be >= 1"):
            DataSettings(**{field: 0})  # type: ignore[arg-type]


def test_a_directory_without_or_with_a_foreign_manifest(tmp_path: Path) -> None:
    assert read_manifest(tmp_path / MANIFEST) == (None, b"")
    with pytest.raises(InputError, match="not a prepared-data directory") as info:
        PreparedData.open(tmp_path)
    assert info.value.path == str(tmp_path)
    for text, problem in [("{", "unreadable manifest"), ("[1]", "unreadable manifest"),
                          ('{"format": "x", "version": 1}', "format 'x' version 1")]:  # fmt: skip
        (tmp_path / MANIFEST).write_text(text)
        with pytest.raises(InputError, match=problem):
            read_manifest(tmp_path / MANIFEST)


@settings(max_examples=40, deadline=None)
@given(seqs=SEQS, data=st.data())
def test_a_ragged_array_read_from_files_equals_it_in_memory(
    tmp_path_factory: pytest.TempPathFactory, seqs: list[list[int]], data: st.DataObject
) -> None:
    """The prepared layout read with pread (`IdFile`) gives the in-memory rows and padding."""
    mem = Ragged.from_lists(seqs)
    d = tmp_path_factory.mktemp("ragged")
    mem.ids.astype(np.uint16).tofile(d / "ids")
    np.asarray(mem.offsets).tofile(d / "off")
    disk = Ragged(IdFile(d / "ids", "uint16", len(mem.ids)),
                  IdFile(d / "off", "int64", len(mem) + 1), mem.lengths)  # fmt: skip
    assert [disk[i].tolist() for i in range(len(disk))] == seqs
    rows = np.array(data.draw(st.lists(st.integers(0, max(0, len(seqs) - 1)), max_size=6))
                    if seqs else [], dtype=np.int64)  # fmt: skip
    for reverse in (False, True):
        want = mem.padded(rows, reverse=reverse, room=1)
        assert disk.padded(rows, reverse=reverse, room=1).tolist() == want.tolist()


def test_an_id_file_cut_short_after_opening_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train.src.ids"
    np.arange(100, dtype=np.uint16).tofile(path)
    f = IdFile(path, "uint16", 100)
    assert f[10:13].tolist() == [10, 11, 12] and f.take(np.array([99, 0])).tolist() == [99, 0]
    with pytest.raises(IndexError):
        f.take(np.array([100]))
    with open(path, "r+b") as fh:
        fh.truncate(50)
    with pytest.raises(InputError, match="damaged") as err:
        f[20:30]
    assert str(path) in str(err.value)
    f.close()
    with pytest.raises(ValueError, match="closed"):
        f[0:1]
