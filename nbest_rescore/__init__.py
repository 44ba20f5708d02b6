"""nbest_rescore: Sutskever et al. 2014 LSTM encoder-decoder and Moses n-best rescoring."""

from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    """The installed distribution's version (pyproject.toml is its one source); a checkout used
    without installing says so instead of guessing."""
    try:
        return version("nbest_rescore")
    except PackageNotFoundError:
        return "0+unknown (not installed)"


__version__ = _version()
