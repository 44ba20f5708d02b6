"""nbest_rescore: Sutskever et al. 2014 LSTM encoder-decoder and Moses n-best rescoring."""

__version__ = "0.1.0"
