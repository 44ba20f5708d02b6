"""The distillation recipe's file handling: pieces cut as GNU `split -n l/K` cuts them, and the
teacher's translations joined only when line-aligned and complete."""

from __future__ import annotations

import gzip
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.multi30k.distill import join_targets, write_shards


@pytest.mark.skipif(shutil.which("split") is None, reason="needs coreutils split")
@pytest.mark.parametrize("shards", [2, 3, 5])
def test_pieces_are_cut_as_split_cuts_them(tmp_path: Path, shards: int) -> None:
    rng = random.Random(shards)
    text = "".join(" ".join("w" * rng.randint(1, 9) for _ in range(rng.randint(1, 12))) + "\n"
                   for _ in range(97))  # fmt: skip
    source = tmp_path / "train.en.gz"
    with gzip.open(source, "wt", encoding="utf-8") as fh:
        fh.write(text)
    plain = tmp_path / "plain.en"
    plain.write_text(text, encoding="utf-8")
    ref_dir = tmp_path / "split"
    ref_dir.mkdir()
    subprocess.run(["split", "-n", f"l/{shards}", "-d", str(plain), str(ref_dir / "x")], check=True)
    want = [p.read_bytes() for p in sorted(ref_dir.iterdir())]
    got = [p.read_bytes() for p in write_shards(source, tmp_path / "teacher", shards)]
    assert got == want
    assert b"".join(got) == text.encode()


def test_join_refuses_a_short_or_empty_translation(tmp_path: Path) -> None:
    parts = []
    for k, (src, hyp) in enumerate([("a\nb\n", "A\nB\n"), ("c\n", "C\n")]):
        p = tmp_path / f"part.{k}.en"
        p.write_text(src, encoding="utf-8")
        p.with_suffix(".fr").write_text(hyp, encoding="utf-8")
        parts.append(p)
    out = tmp_path / "train.kd.fr"
    assert join_targets(parts, out) == 3
    assert out.read_text(encoding="utf-8") == "A\nB\nC\n"
    parts[1].with_suffix(".fr").write_text("", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"part\.1\.fr: 0 lines for 1 sources"):
        join_targets(parts, out)
    parts[1].with_suffix(".fr").write_text(" \n", encoding="utf-8")
    with pytest.raises(SystemExit, match="an empty translation"):
        join_targets(parts, out)
    assert out.read_text(encoding="utf-8") == "A\nB\nC\n"  # left as it was
