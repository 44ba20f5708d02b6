"""End-to-end reproduction of the paper's tables on Multi30k En->Fr with real Moses n-best lists."""
