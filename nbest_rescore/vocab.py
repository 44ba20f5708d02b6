"""Vocabularies: the most frequent words of a corpus plus four specials with fixed ids."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS: tuple[str, ...] = ("<pad>", "<unk>", "<s>", "</s>")
assert SPECIALS.index("<pad>") == PAD and SPECIALS.index("<unk>") == UNK
assert SPECIALS.index("<s>") == BOS and SPECIALS.index("</s>") == EOS


@dataclass(frozen=True)
class Vocab:
    """An id <-> token mapping; ids 0..3 are PAD, UNK, BOS, EOS."""

    itos: tuple[str, ...]
    stoi: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.itos[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"vocabulary must start with the specials {SPECIALS}")
        stoi = {tok: i for i, tok in enumerate(self.itos)}
        if len(stoi) != len(self.itos):
            raise ValueError("vocabulary has duplicate tokens")
        object.__setattr__(self, "stoi", stoi)

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(
        cls, sentences: Iterable[Sequence[str]], max_size: int | None = None, min_count: int = 1
    ) -> Vocab:
        """The `max_size` most frequent tokens (specials included in the size) seen >= `min_count` times.

        Ties in frequency are broken alphabetically so the result is deterministic.
        """
        counts: Counter[str] = Counter()
        for sent in sentences:
            counts.update(sent)
        return cls.from_counts(counts, max_size=max_size, min_count=min_count)

    @classmethod
    def from_counts(
        cls, counts: Mapping[str, int], max_size: int | None = None, min_count: int = 1
    ) -> Vocab:
        """`build` from word counts already made (a corpus streamed once, never held in memory)."""
        ranked = sorted(
            (tok for tok, c in counts.items() if c >= min_count and tok not in SPECIALS),
            key=lambda t: (-counts[t], t),
        )
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIALS))]
        return cls(SPECIALS + tuple(ranked))

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Token ids, unknown tokens -> UNK (no BOS/EOS added)."""
        get = self.stoi.get
        return [get(t, UNK) for t in tokens]

    def decode(self, ids: Iterable[int], *, strip_specials: bool = True) -> list[str]:
        """Tokens for ids; stops at EOS and drops PAD/BOS when `strip_specials`."""
        out: list[str] = []
        for i in ids:
            if strip_specials:
                if i == EOS:
                    break
                if i in (PAD, BOS):
                    continue
            out.append(self.itos[i])
        return out

    def oov_rate(self, sentences: Iterable[Sequence[str]]) -> float:
        """Fraction of running tokens not in the vocabulary."""
        total = unk = 0
        for sent in sentences:
            total += len(sent)
            unk += sum(1 for t in sent if t not in self.stoi)
        return unk / total if total else 0.0

    def to_list(self) -> list[str]:
        return list(self.itos)

    @classmethod
    def from_list(cls, itos: Sequence[str]) -> Vocab:
        return cls(tuple(itos))
