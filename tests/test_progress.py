"""Progress bars (nbest_rescore.progress): silent when stderr is not a terminal or with --quiet,
a bar with counts, rate and ETA on a terminal."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator

import pytest

from nbest_rescore.progress import QUIET, ProgressSettings, bar, progress


class Terminal(io.StringIO):
    """A stderr that says it is a terminal (as a TTY would) and keeps what is written."""

    def isatty(self) -> bool:
        return True


@contextlib.contextmanager
def stderr(*, terminal: bool) -> Iterator[io.StringIO]:
    """stderr as a terminal or a pipe, within the test itself (pytest's capture would undo a
    replacement made by a fixture, between the setup and the call)."""
    with contextlib.redirect_stderr(Terminal() if terminal else io.StringIO()) as err:
        yield err


def test_default_follows_whether_stderr_is_a_terminal() -> None:
    for terminal in (True, False):
        with stderr(terminal=terminal):
            assert ProgressSettings().active == terminal
            assert not QUIET.active and not ProgressSettings(enabled=False).active
            assert ProgressSettings(enabled=True).active


def test_default_is_silent_when_piped() -> None:
    with stderr(terminal=False) as err:
        got = list(progress(range(50), ProgressSettings(), desc="scoring", total=50))
        with bar(ProgressSettings(), desc="scoring", total=10) as b:
            b.update(10)
    assert got == list(range(50))
    assert err.getvalue() == ""


@pytest.mark.parametrize("settings", [QUIET, ProgressSettings(enabled=False)])
def test_quiet_is_silent_even_on_a_terminal(settings: ProgressSettings) -> None:
    items = [object() for _ in range(20)]
    with stderr(terminal=True) as err:
        assert list(progress(items, settings, desc="x", total=20)) == items
        with bar(settings, total=5) as b:
            b.update(5)
    assert err.getvalue() == ""


def test_a_terminal_shows_counts_rate_and_eta() -> None:
    items = list(range(40))
    with stderr(terminal=True) as err:
        got = list(progress(iter(items), ProgressSettings(), desc="scoring", total=40, unit="sent"))
    assert got == items
    shown = err.getvalue()
    assert "scoring" in shown and "40/40" in shown
    assert re.search(r"[\d.?]+ ?sent/s", shown)  # the rate
    assert re.search(r"<\d\d:\d\d", shown)  # the time left (ETA)


def test_a_manual_bar_counts_updates() -> None:
    settings = ProgressSettings(enabled=True)
    with stderr(terminal=True) as err, bar(settings, desc="hyps", total=591, unit="hyp") as b:
        for n in (200, 200, 191):
            b.update(n)
    assert "hyps" in err.getvalue() and "591/591" in err.getvalue()
    assert "hyp/s" in err.getvalue()
