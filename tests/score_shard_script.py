"""Score an n-best file through the chunk store and save the result arrays (tests' subprocess).

Run plainly, or under `python -m torch.distributed.run --nproc-per-node N` to shard chunks over
ranks; every rank writes OUT.rank{R}.npz with the full assembled result and its timing figures.
`--sleep` pauses after each chunk so a test can kill the run part-way.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from nbest_rescore import distributed
from nbest_rescore.checkpoint import load_model
from nbest_rescore.fileio import read_lines
from nbest_rescore.nbest_scorer import score_nbest
from nbest_rescore.scoring import ScoringConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nbest", required=True)
    ap.add_argument("--src", required=True)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--chunk-sentences", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--sleep", type=float, default=0.0)
    args = ap.parse_args()

    torch.set_num_threads(1)
    with distributed.process_group("cpu") as info:
        bundles = [load_model(p) for p in args.model]
        cfg = ScoringConfig(max_tokens=args.max_tokens, chunk_sentences=args.chunk_sentences)

        def pause(_: int) -> None:
            time.sleep(args.sleep)

        res = score_nbest(
            args.nbest,
            read_lines(args.src),
            bundles,
            cfg,
            args.cache,
            sources_path=args.src,
            on_chunk=pause if args.sleep > 0 else None,
        )
        out = Path(f"{args.out}.rank{info.rank}.npz")
        np.savez(
            out,
            logprob=res.logprob,
            n_tokens=res.n_tokens,
            n_unk=res.n_unk,
            offsets=res.offsets,
            timing=np.array(json.dumps(res.timing)),
        )


if __name__ == "__main__":
    main()
