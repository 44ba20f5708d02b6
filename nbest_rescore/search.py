"""Left-to-right beam search over a batch of sentences (the paper's decoder), with n-best output.

All sentences x beam hypotheses are advanced by one batched decoder call per step. A hypothesis that
emits EOS leaves the beam and joins its sentence's finished set; the beam keeps its `beam` best
unfinished continuations. A sentence is done once its `nbest`-th best finished hypothesis scores at
least the best score any unfinished one could still reach, or at its maximum length
(`max_len_a * source length + max_len_b` tokens, then EOS is forced). Scores are summed log-probs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nbest_rescore.ensemble import Ensemble, SourceIds
from nbest_rescore.validate import OptionError, option_at_least
from nbest_rescore.vocab import BOS, EOS, PAD, UNK


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Beam search settings.

    `beam=1` is greedy search. Hypotheses have at most `max_len_a * source tokens + max_len_b`
    tokens before EOS. `length_penalty` is GNMT's alpha (0 = off, plain summed log-probs as in the
    paper). `min_len`: EOS is forbidden before this many tokens for a non-empty source (summed
    log-probs favour short output, and the empty hypothesis can win; 1 keeps every non-empty
    source from getting an empty translation, 0 allows it). `forbid_unk` masks UNK's log-prob to
    -inf. `batch_size` sentences share each step.
    """

    beam: int = 12
    nbest: int = 1
    max_len_a: float = 2.0
    max_len_b: int = 10
    length_penalty: float = 0.0
    min_len: int = 1
    forbid_unk: bool = False
    batch_size: int = 32

    def __post_init__(self) -> None:
        """Each field in range, the error naming its `rescore translate` option (exit 2)."""
        for option, value, least in (("--beam", self.beam, 1), ("--nbest", self.nbest, 1),
                                     ("--batch-size", self.batch_size, 1),
                                     ("--min-len", self.min_len, 0),
                                     ("--length-penalty", self.length_penalty, 0),
                                     ("--max-len-a", self.max_len_a, 0),
                                     ("--max-len-b", self.max_len_b, 0)):  # fmt: skip
            option_at_least(option, value, least)
        if self.nbest > self.beam:
            raise OptionError(
                f"--nbest {self.nbest} needs a beam at least as wide (--beam is {self.beam})"
            )
        if self.max_len_a == 0 and self.max_len_b == 0:
            raise OptionError(
                "the maximum length (--max-len-a * source length + --max-len-b) must be > 0"
            )

    def max_len(self, src_len: int) -> int:
        """Most target tokens (EOS excluded) a hypothesis may have for a source of `src_len` tokens."""
        return max(1, int(self.max_len_a * src_len + self.max_len_b))


@dataclass(frozen=True)
class BeamHypothesis:
    """A finished hypothesis: target ids (EOS excluded), ensemble score and per-model scores.

    Scores are sums of log-probabilities over the tokens and the final EOS; `rank_score` is the
    score divided by the length penalty (equal to `score` when the penalty is off).
    """

    tokens: tuple[int, ...]
    score: float
    model_scores: tuple[float, ...]
    rank_score: float

    @property
    def length(self) -> int:
        return len(self.tokens)


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ((5 + length) / 6) ** alpha, `length` counting the EOS; 1 when alpha = 0."""
    return 1.0 if alpha == 0 else ((5.0 + length) / 6.0) ** alpha


@dataclass(frozen=True)
class StepResult:
    """The outcome of one beam step for (batch, beam) hypotheses.

    `scores`, `origin`, `tokens` (batch, beam): the new active hypotheses (best first), the beam slot
    each extends and the token it appends. `eos_scores`, `eos_origin` (batch, beam) with `eos_mask`:
    the hypotheses that end here (EOS among the `beam` best continuations).
    """

    scores: Tensor
    origin: Tensor
    tokens: Tensor
    eos_scores: Tensor
    eos_origin: Tensor
    eos_mask: Tensor


def beam_step(scores: Tensor, logp: Tensor, k: int, *, eos: int = EOS) -> StepResult:
    """Pick the top-k continuations of every sentence's beam.

    `scores` (B, K) are the running scores of the current hypotheses (-inf for empty slots) and
    `logp` (B, K, V) the next-token log-probs. Among the 2k best continuations, those that are EOS
    within the first k finish; the first k non-EOS continuations form the new beam.
    """
    kk, v = logp.shape[1:]
    n = min(2 * k, kk * v)
    top_scores, top_idx = top_candidates(scores, logp, n)
    origin = torch.div(top_idx, v, rounding_mode="floor")
    tokens = top_idx % v
    is_eos = tokens == eos
    # Stable: non-EOS candidates first, each group keeps its score order.
    order = torch.sort(is_eos.to(torch.uint8), dim=1, stable=True).indices[:, :k]
    act_scores = top_scores.gather(1, order)
    act_tokens = tokens.gather(1, order)
    act_scores = act_scores.masked_fill(act_tokens == eos, float("-inf"))
    first = min(k, n)
    eos_mask = is_eos[:, :first] & torch.isfinite(top_scores[:, :first])
    return StepResult(
        scores=act_scores,
        origin=origin.gather(1, order),
        tokens=act_tokens,
        eos_scores=top_scores[:, :first],
        eos_origin=origin[:, :first],
        eos_mask=eos_mask,
    )


TOPK_BLOCK = 64
"""Block width of `top_candidates`' first pass; a vocabulary under `4 * TOPK_BLOCK` takes the direct path."""


def top_candidates(scores: Tensor, logp: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The `n` best of every sentence's continuations `scores[b, j] + logp[b, j, v]`, best first:
    their scores and flat indices j * V + v (as `topk` over the (B, K * V) sum would give them).

    Two passes instead of one over all K * V sums: each hypothesis' log-probs are cut into blocks
    of `TOPK_BLOCK`, and a block's best continuation is its row score plus the block's maximum
    (a monotone sum, so exact). The n best continuations lie in the n best blocks (a block outside
    them has n blocks above it, each holding a better continuation), so `topk` then reads only
    those n blocks. With beam 12 and 6.6k words this reads the log-probs once, with no
    (B, K * V) sum written: 0.46x the direct `topk`'s time (bench/bench_step_ops.py). Equal
    scores may come in another order, and a -inf pick (fewer than n finite continuations) may
    carry the index of another candidate: like `beam_step`'s callers, read only finite picks.
    """
    b, kk, v = logp.shape
    bs = TOPK_BLOCK
    if v < 4 * bs:
        return (scores.unsqueeze(-1) + logp).view(b, kk * v).topk(n, dim=1)
    full = v // bs * bs
    block_max = logp[..., :full].reshape(b, kk, full // bs, bs).amax(-1)
    if full < v:  # the ragged last block
        block_max = torch.cat([block_max, logp[..., full:].amax(-1, keepdim=True)], dim=-1)
    nblk = block_max.size(-1)
    bound = (scores.unsqueeze(-1) + block_max).view(b, kk * nblk)
    best_blocks = bound.topk(min(n, kk * nblk), dim=1).indices  # (B, n')
    row = torch.div(best_blocks, nblk, rounding_mode="floor")
    col = (best_blocks % nblk).unsqueeze(-1) * bs + torch.arange(bs, device=logp.device)
    flat = (row.unsqueeze(-1) * v + col.clamp(max=v - 1)).view(b, -1)
    values = logp.view(b, kk * v).gather(1, flat) + scores.gather(1, row).repeat_interleave(bs, 1)
    if full < v:  # the ragged block's tail (clamped above) is no candidate
        values.masked_fill_((col >= v).view(b, -1), float("-inf"))
    top_scores, pos = values.topk(n, dim=1)
    return top_scores, flat.gather(1, pos)


def beam_search(
    ensemble: Ensemble, sources: Sequence[SourceIds], cfg: SearchConfig
) -> list[list[BeamHypothesis]]:
    """Translate `sources` in batches of `cfg.batch_size`; per sentence its finished hypotheses, best first."""
    out: list[list[BeamHypothesis]] = []
    for start in range(0, len(sources), cfg.batch_size):
        out.extend(search_batch(ensemble, sources[start : start + cfg.batch_size], cfg))
    return out


@torch.inference_mode()
def search_batch(
    ensemble: Ensemble, sources: Sequence[SourceIds], cfg: SearchConfig
) -> list[list[BeamHypothesis]]:
    """Beam search for one batch: every step advances all live hypotheses in one call.

    The hypotheses sit on a (live sentences x beam) grid. Only those that can still enter their
    sentence's n-best are computed: once a sentence has `nbest` finished hypotheses, an active one
    whose best reachable score (see `_could_improve`) is no better than the n-th finished is dead.
    Its continuations would rank below every live one's that could matter, so the output is that
    of computing them all; its grid slot stays, with -inf log-probs.
    """
    # One function on purpose (94 lines): the step loop shares a dozen tensors of grid state,
    # and splitting it would pass them all back and forth in the hottest loop of the package.
    nb = len(sources)
    if nb == 0:
        return []
    k, m, dev = cfg.beam, len(ensemble), ensemble.device
    alpha = cfg.length_penalty
    src_lens = [max(len(ids) for ids in src) for src in sources]
    max_lens = [cfg.max_len(n) for n in src_lens]
    min_len_t = torch.tensor(
        [min(cfg.min_len, mx) if n > 0 else 0 for n, mx in zip(src_lens, max_lens, strict=True)],
        device=dev,
    )

    # The beam starts with one empty hypothesis per sentence and widens to (up to) k as it steps.
    encs = ensemble.encode(sources)  # per sentence; the rows' (h, c) live in `hcs`
    hcs = [(e[0], e[1]) for e in encs]
    scores = torch.zeros(nb, 1, device=dev)
    model_scores = torch.zeros(nb, 1, m, device=dev)
    history = torch.zeros(nb, 1, 0, dtype=torch.long, device=dev)
    prev = torch.full((nb,), BOS, dtype=torch.long, device=dev)
    slots: Tensor | None = None  # grid positions of the computed rows; None: all, in order
    alive = list(range(nb))  # original sentence index of every live row
    max_len_t = torch.tensor(max_lens, device=dev)
    banned = [PAD, BOS] + ([UNK] if cfg.forbid_unk else [])
    finished: list[list[BeamHypothesis]] = [[] for _ in range(nb)]

    t = 0
    while alive:
        na, width_in = scores.shape
        logp, per_model, hcs = ensemble.grid_step(prev, hcs, encs, slots, width_in)
        if slots is not None:
            logp, per_model = _on_grid(logp, per_model, slots, na * width_in)
        # In place is safe even when `logp` aliases `per_model`: banned entries are never chosen.
        logp = _constrain(logp.view(na, width_in, -1), t, banned, min_len_t, max_len_t)
        res = beam_step(scores, logp, k)
        rows = torch.arange(na, device=dev).unsqueeze(1) * width_in
        per_model = per_model.view(m, na * width_in, -1)

        # Hypotheses that end here join their sentence's finished set.
        ended = _ended(res, rows.squeeze(1), model_scores, per_model, history, t, alpha)
        for row, hyp in ended:
            finished[alive[row]].append(hyp)

        # Advance the beam: reorder histories by origin, append the chosen tokens.
        width = res.tokens.size(1)  # k, or fewer while the beam is still filling up
        flat = (rows + res.origin).view(-1)
        tok = res.tokens.view(-1)
        model_scores = (model_scores.view(na * width_in, m)[flat] + per_model[:, flat, tok].T).view(
            na, width, m
        )
        history = torch.cat([history.view(na * width_in, t)[flat], tok.unsqueeze(1)], dim=1).view(
            na, width, t + 1
        )
        scores = res.scores
        t += 1

        # Sentences whose n-best can no longer change leave the batch; so do dead hypotheses.
        keep = _open_rows(finished, alive, scores[:, 0].tolist(), t, max_lens, cfg)
        if not keep:
            break
        live = _live(scores, [finished[alive[r]] for r in keep], keep, t, max_lens, alive, cfg)
        # The computed row (of this step's output) that each live hypothesis extends.
        row_of_slot = (
            torch.arange(na * width_in, device=dev)
            if slots is None
            else torch.full((na * width_in,), -1, dtype=torch.long, device=dev).index_copy_(
                0, slots, torch.arange(slots.numel(), device=dev)
            )
        )
        if len(keep) < na:
            idx = torch.tensor(keep, device=dev)
            scores, model_scores, history = scores[idx], model_scores[idx], history[idx]
            flat = flat.view(na, width)[idx].view(-1)
            tok = tok.view(na, width)[idx].view(-1)
            encs = ensemble.select(encs, idx)
            max_len_t, min_len_t = max_len_t[idx], min_len_t[idx]
            alive = [alive[i] for i in keep]
        new_slots = live.view(-1).nonzero().squeeze(1)
        src_rows = row_of_slot[flat.index_select(0, new_slots)]
        hcs = [(h.index_select(1, src_rows), c.index_select(1, src_rows)) for h, c in hcs]
        prev = tok.index_select(0, new_slots)
        slots = None if new_slots.numel() == live.numel() else new_slots

    return [fin[: cfg.nbest] for fin in finished]


def _on_grid(logp: Tensor, per_model: Tensor, slots: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """The computed rows' log-probs placed on the full grid of `size` slots, -inf elsewhere."""
    m, _, v = per_model.shape
    full = per_model.new_full((m, size, v), float("-inf"))
    full.index_copy_(1, slots, per_model)
    if m == 1:
        return full[0], full
    return logp.new_full((size, v), float("-inf")).index_copy_(0, slots, logp), full


def _live(
    scores: Tensor,
    fins: list[list[BeamHypothesis]],
    keep: list[int],
    t: int,
    max_lens: list[int],
    alive: list[int],
    cfg: SearchConfig,
) -> Tensor:
    """(kept sentences, beam) bool: the hypotheses that could still enter their sentence's n-best.

    `fins` are the kept sentences' finished lists, sorted best first (by `_open_rows`). A
    hypothesis is dead when even its best reachable score, `score / max(lp(t + 1), lp(max_len +
    1))`, is no better than the n-th finished one's rank score (a later equal one ranks after it).
    """
    sc = scores[torch.tensor(keep, device=scores.device)] if len(keep) < scores.size(0) else scores
    live = torch.isfinite(sc)
    thresholds = [f[cfg.nbest - 1].rank_score if len(f) >= cfg.nbest else None for f in fins]
    if all(th is None for th in thresholds):
        return live
    alpha = cfg.length_penalty
    thr = torch.tensor(
        [float("-inf") if th is None else th for th in thresholds],
        dtype=torch.float64,
        device=sc.device,
    )
    lp = torch.tensor(
        [
            max(length_penalty(t + 1, alpha), length_penalty(max_lens[alive[r]] + 1, alpha))
            for r in keep
        ],
        dtype=torch.float64,
        device=sc.device,
    )
    return live & (sc.double() / lp.unsqueeze(1) > thr.unsqueeze(1))


def _could_improve(
    fin: list[BeamHypothesis], best_active: float, t: int, max_len: int, nbest: int, alpha: float
) -> bool:
    """Whether an active hypothesis (best raw score `best_active`, `t` tokens) could still enter the n-best.

    Log-probs only lower a score (scores are <= 0), so a hypothesis finishing with L tokens + EOS
    (t <= L <= max_len) reaches at most best_active / max(lp(L + 1)) over those lengths.
    """
    if not math.isfinite(best_active):
        return False
    if len(fin) < nbest:
        return True
    bound = best_active
    if alpha != 0:
        bound /= max(length_penalty(t + 1, alpha), length_penalty(max_len + 1, alpha))
    return bound > fin[nbest - 1].rank_score


def _constrain(logp: Tensor, t: int, banned: list[int], min_len: Tensor, max_len: Tensor) -> Tensor:
    """Next-token log-probs (sentences, beam, V) after the rules: banned tokens never, EOS not
    before a sentence's minimum length, nothing but EOS at its maximum (in place)."""
    logp[..., banned] = float("-inf")
    too_short = min_len > t
    if bool(too_short.any()):
        logp[too_short, :, EOS] = float("-inf")
    force = max_len <= t
    if bool(force.any()):
        eos_col = logp[force, :, EOS]
        logp[force] = float("-inf")
        logp[force, :, EOS] = eos_col
    return logp


def _ended(
    res: StepResult,
    row_base: Tensor,
    model_scores: Tensor,
    per_model: Tensor,
    history: Tensor,
    t: int,
    alpha: float,
) -> list[tuple[int, BeamHypothesis]]:
    """(live row, finished hypothesis) for every hypothesis that emits EOS at step `t`.

    `row_base[r]` is row r's first slot in the flattened (rows x beam) layout of the step's input.
    """
    if not bool(res.eos_mask.any()):
        return []
    m = per_model.size(0)
    r, c = res.eos_mask.nonzero(as_tuple=True)
    src_flat = (row_base[r] + res.eos_origin[r, c]).long()
    width = model_scores.numel() // m
    fin_ms = model_scores.view(width, m)[src_flat] + per_model[:, src_flat, EOS].T
    fin_tok = history.view(width, t)[src_flat]
    out = []
    for row, s, ms, toks in zip(
        r.tolist(), res.eos_scores[r, c].tolist(), fin_ms.tolist(), fin_tok.tolist(), strict=True
    ):
        rank = s / length_penalty(len(toks) + 1, alpha)
        out.append((row, BeamHypothesis(tuple(toks), s, tuple(ms), rank)))
    return out


def _open_rows(
    finished: list[list[BeamHypothesis]],
    alive: list[int],
    best_active: list[float],
    t: int,
    max_lens: list[int],
    cfg: SearchConfig,
) -> list[int]:
    """Live rows whose sentence's n-best can still change (finished lists sorted in place)."""
    keep: list[int] = []
    for row, sent in enumerate(alive):
        fin = finished[sent]
        if fin:
            fin.sort(key=lambda h: h.rank_score, reverse=True)
        if t > max_lens[sent] or not _could_improve(
            fin, best_active[row], t, max_lens[sent], cfg.nbest, cfg.length_penalty
        ):
            continue
        keep.append(row)
    return keep
