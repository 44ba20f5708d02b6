"""Tokenisation: the single source of truth for how raw text becomes model tokens.

The settings are saved inside every checkpoint so that training, translation and n-best scoring
can never disagree about tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import KW_ONLY, asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sacremoses import MosesDetokenizer, MosesTokenizer

# Moses' XML escapes, as written by `escape=True` tokenisation and by Moses pipelines.
_ESCAPES: tuple[tuple[str, str], ...] = (
    ("&", "&amp;"),
    ("|", "&#124;"),
    ("<", "&lt;"),
    (">", "&gt;"),
    ("'", "&apos;"),
    ('"', "&quot;"),
    ("[", "&#91;"),
    ("]", "&#93;"),
)
_ESCAPED_FORMS = tuple(esc for _, esc in _ESCAPES)


@dataclass(frozen=True)
class TokenizerConfig:
    """How one language's raw text is tokenised (sacremoses)."""

    lang: str
    _: KW_ONLY
    escape: bool = False
    aggressive_dash_splits: bool = False
    lowercase: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerConfig:
        return cls(**d)


@functools.lru_cache(maxsize=16)
def _moses_tokenizer(lang: str) -> MosesTokenizer:
    # Imported here: sacremoses compiles its regexes on import (~0.5 s), which runs on
    # already-tokenized text do not need.
    from sacremoses import MosesTokenizer

    return MosesTokenizer(lang=lang)


@functools.lru_cache(maxsize=16)
def moses_detokenizer(lang: str) -> MosesDetokenizer:
    """One shared sacremoses detokenizer per language (model output and BLEU scoring)."""
    from sacremoses import MosesDetokenizer

    return MosesDetokenizer(lang=lang)


def tokenize(text: str, cfg: TokenizerConfig) -> list[str]:
    """Raw text -> model tokens."""
    tokens: list[str] = _moses_tokenizer(cfg.lang).tokenize(
        text.strip(), escape=cfg.escape, aggressive_dash_splits=cfg.aggressive_dash_splits
    )
    if cfg.lowercase:
        tokens = [t.lower() for t in tokens]
    return tokens


def detokenize(tokens: Sequence[str], cfg: TokenizerConfig) -> str:
    """Model tokens -> readable text (unescaping Moses XML entities when the model escapes)."""
    return str(moses_detokenizer(cfg.lang).detokenize(list(tokens), unescape=cfg.escape))


def escape_token(token: str) -> str:
    """Moses XML-escape one token."""
    for raw, esc in _ESCAPES:
        token = token.replace(raw, esc)
    return token


def unescape_token(token: str) -> str:
    """Undo Moses XML escaping of one token."""
    if "&" not in token:
        return token
    for raw, esc in reversed(_ESCAPES):
        token = token.replace(esc, raw)
    return token


def looks_escaped(tokens: Iterable[str]) -> bool:
    """True when any token carries a Moses XML escape (`&apos;`, `&amp;`, ...)."""
    return any("&" in t and any(e in t for e in _ESCAPED_FORMS) for t in tokens)


def to_model_tokens(tokens: Sequence[str], cfg: TokenizerConfig, *, escaped: bool) -> list[str]:
    """Map already-tokenized text (e.g. an n-best hypothesis) to the model's token convention.

    `escaped` says whether `tokens` carry Moses XML escapes; they are converted to match
    `cfg.escape`, and lowercased when the model is lowercased.
    """
    out = list(tokens)
    if escaped and not cfg.escape:
        out = [unescape_token(t) for t in out]
    elif cfg.escape and not escaped:
        out = [escape_token(t) for t in out]
    if cfg.lowercase:
        out = [t.lower() for t in out]
    return out
