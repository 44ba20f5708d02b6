"""Tokenisation (nbest_rescore.text) on real Multi30k lines, checked against sacremoses itself and
by round trips (tokenise -> detokenise, escape -> unescape)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sacremoses import MosesDetokenizer, MosesTokenizer

from nbest_rescore.fileio import read_lines
from nbest_rescore.text import (
    TokenizerConfig,
    detokenize,
    escape_token,
    looks_escaped,
    to_model_tokens,
    tokenize,
    unescape_token,
)

DATA = Path(__file__).parent / "data"
LINES = {
    "en": read_lines(DATA / "test2016.head30.en.gz"),
    "fr": read_lines(DATA / "test2016.head30.fr.gz"),
}


@pytest.mark.parametrize("lang", ["en", "fr"])
@pytest.mark.parametrize("escape", [False, True])
def test_tokenize_and_detokenize_are_sacremoses(lang: str, escape: bool) -> None:
    tok, detok = MosesTokenizer(lang=lang), MosesDetokenizer(lang=lang)
    cfg = TokenizerConfig(lang, escape=escape)
    for line in LINES[lang]:
        tokens = tokenize(line, cfg)
        assert tokens == tok.tokenize(line.strip(), escape=escape)
        assert detokenize(tokens, cfg) == detok.detokenize(tokens, unescape=escape)


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_real_lines_round_trip(lang: str) -> None:
    """Detokenising the tokens gives the line back (escaped or not), up to spacing sacremoses
    cannot know; every line of the slice comes back exactly."""
    for escape in (False, True):
        cfg = TokenizerConfig(lang, escape=escape)
        assert [detokenize(tokenize(s, cfg), cfg) for s in LINES[lang]] == [
            s.strip() for s in LINES[lang]
        ]


def test_escaped_tokens_convert_to_the_model_convention() -> None:
    """A Moses-escaped tokenisation maps onto an unescaped model's tokens and back."""
    plain, esc = TokenizerConfig("fr"), TokenizerConfig("fr", escape=True)
    escaped_lines = 0
    for line in LINES["fr"]:
        t_plain, t_esc = tokenize(line, plain), tokenize(line, esc)
        escaped_lines += looks_escaped(t_esc)
        assert not looks_escaped(t_plain) or "&" in line
        assert to_model_tokens(t_esc, plain, escaped=True) == t_plain
        assert to_model_tokens(t_plain, esc, escaped=False) == t_esc
        assert to_model_tokens(t_esc, esc, escaped=True) == t_esc
    assert escaped_lines > 0  # French apostrophes: the slice exercises the escapes


def test_lowercase_models_see_lowercased_tokens() -> None:
    low = TokenizerConfig("en", lowercase=True)
    for line in LINES["en"]:
        want = [t.lower() for t in tokenize(line, TokenizerConfig("en"))]
        assert tokenize(line, low) == want
        assert to_model_tokens(tokenize(line, TokenizerConfig("en")), low, escaped=False) == want


def test_config_round_trips_through_a_dict() -> None:
    cfg = TokenizerConfig("fr", escape=True, aggressive_dash_splits=True, lowercase=True)
    assert TokenizerConfig.from_dict(cfg.to_dict()) == cfg


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="ab&|<>'\"[];#0123456789", max_size=12))
def test_escape_unescape_round_trip(token: str) -> None:
    esc = escape_token(token)
    assert unescape_token(esc) == token
    assert not any(c in esc for c in "|<>'\"[]")
    assert looks_escaped([esc]) == (esc != token)
