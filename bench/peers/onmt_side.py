"""The OpenNMT-py side of `bench/bench_peers.py`; runs in the peer's own virtual environment.

It never imports nbest_rescore (the peer is no dependency of ours, and ours none of its): it reads
our checkpoint with plain `torch.load`. Two commands:

    python onmt_side.py convert OURS.pt ONMT.pt
        An OpenNMT-py 3.5 model of the same architecture holding our weights: RNN encoder and
        decoder (LSTM, same layers and sizes), `general` global attention without input feeding,
        no bridge. Our Luong keys are W_k m (memory projected); OpenNMT-py's `general` score
        projects the query instead, (W_in h) . m, so W_in = W_k^T. Our specials become its
        (`<pad>` -> `<blank>`), ids unchanged. Our model reverses the source itself; OpenNMT-py
        does not, so its inputs must be fed reversed.

    python onmt_side.py score ONMT.pt SRC TGT OUT
        Teacher-forced log p(TGT | SRC) (EOS included) for every line pair with OpenNMT-py's own
        model code, one per line of OUT (the conversion check).
"""

from __future__ import annotations

import sys

import torch

ONMT_SPECIALS = {"<pad>": "<blank>", "<unk>": "<unk>", "<s>": "<s>", "</s>": "</s>"}


def _opt(cfg: dict, work: str):  # type: ignore[no-untyped-def]
    from onmt import opts
    from onmt.utils.parse import ArgumentParser

    if cfg["attention"] not in ("luong", "none"):
        raise SystemExit(f"cannot convert attention {cfg['attention']!r} (luong or none only)")
    parser = ArgumentParser(description="convert")
    opts.train_opts(parser)
    layers = str(cfg["layers"])
    args = [
        "-src_vocab", f"{work}.src_vocab", "-tgt_vocab", f"{work}.tgt_vocab",
        "-data", "{}", "-save_data", work,
        "-encoder_type", "rnn", "-decoder_type", "rnn", "-rnn_type", "LSTM",
        "-enc_layers", layers, "-dec_layers", layers,
        "-hidden_size", str(cfg["hidden"]), "-word_vec_size", str(cfg["emb_dim"]),
        "-global_attention", "general" if cfg["attention"] == "luong" else "none",
        "-input_feed", "0", "-dropout", "0.0", "-attention_dropout", "0.0",
        "-model_dtype", "fp32",
    ]  # fmt: skip
    opt = parser.parse_args(args)
    ArgumentParser.update_model_opts(opt)
    ArgumentParser.validate_model_opts(opt)
    return opt


def convert(ours_path: str, out_path: str) -> None:
    from onmt.inputters.inputter import dict_to_vocabs
    from onmt.model_builder import build_base_model

    ours = torch.load(ours_path, map_location="cpu", weights_only=True)
    cfg = ours["model_config"]
    if cfg.get("reverse_target"):
        raise SystemExit("right-to-left models have no OpenNMT-py counterpart here")
    w = dict(ours["model"])  # stored as shipped (fp16); OpenNMT-py loads them as fp32
    vocab = {
        "src": [ONMT_SPECIALS.get(t, t) for t in ours["src_vocab"]],
        "tgt": [ONMT_SPECIALS.get(t, t) for t in ours["tgt_vocab"]],
        "data_task": "seq2seq",
        "decoder_start_token": "<s>",
    }
    opt = _opt(cfg, out_path)
    model = build_base_model(opt, dict_to_vocabs(vocab))
    mapping = {
        "encoder.embeddings.make_embedding.emb_luts.0.weight": w["src_emb.weight"],
        "decoder.embeddings.make_embedding.emb_luts.0.weight": w["tgt_emb.weight"],
        "generator.weight": w["out.weight"],
        "generator.bias": w["out.bias"],
    }
    for side in ("encoder", "decoder"):
        for k, v in w.items():
            if k.startswith(side + "."):
                mapping[f"{side}.rnn.{k.split('.', 1)[1]}"] = v
    if cfg["attention"] == "luong":
        mapping["decoder.attn.linear_in.weight"] = w["att_key.weight"].t().contiguous()
        mapping["decoder.attn.linear_out.weight"] = w["att_out.weight"]
    state = model.state_dict()
    if set(state) != set(mapping):
        raise SystemExit(f"weight names differ: {sorted(set(state) ^ set(mapping))}")
    for k, v in mapping.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise SystemExit(f"{k}: shape {tuple(v.shape)} vs {tuple(state[k].shape)}")
    gen = {k.split(".", 1)[1]: v for k, v in mapping.items() if k.startswith("generator.")}
    body = {k: v for k, v in mapping.items() if not k.startswith("generator.")}
    torch.save(
        {"model": body, "generator": gen, "vocab": vocab, "opt": opt, "optim": None}, out_path
    )


def score(model_path: str, src_path: str, tgt_path: str, out_path: str) -> None:
    """Gold log-probs with OpenNMT-py's model: encoder, decoder, attention and generator are its."""
    from argparse import Namespace

    from onmt.model_builder import load_test_model

    torch.set_num_threads(1)
    opt = Namespace(
        models=[model_path], world_size=1, parallel_mode="data_parallel", gpu=-1,
        gpu_ranks=[], precision="fp32", quant_type="", quant_layers=[], self_attn_type="scaled-dot",
    )  # fmt: skip
    vocabs, model, _ = load_test_model(opt)
    sv, tv = vocabs["src"], vocabs["tgt"]
    bos, eos = tv.lookup_token("<s>"), tv.lookup_token("</s>")
    with open(src_path, encoding="utf-8") as fs, open(tgt_path, encoding="utf-8") as ft:
        pairs = [(s.split(), t.split()) for s, t in zip(fs, ft, strict=True)]
    out = [0.0] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), len(pairs[i][1])))
    pad_s, pad_t = sv.lookup_token("<blank>"), tv.lookup_token("<blank>")
    with torch.no_grad():
        for b in range(0, len(order), 64):  # batches of 64 pairs of similar length, padded
            idx = order[b : b + 64]
            srcs = [[sv.lookup_token(x) for x in pairs[i][0]] for i in idx]
            tgts = [[bos, *(tv.lookup_token(x) for x in pairs[i][1]), eos] for i in idx]
            ls, lt = max(map(len, srcs)), max(map(len, tgts))
            src = torch.tensor([x + [pad_s] * (ls - len(x)) for x in srcs]).unsqueeze(-1)
            tgt = torch.tensor([x + [pad_t] * (lt - len(x)) for x in tgts]).unsqueeze(-1)
            dec_out, _ = model(src, tgt, torch.tensor([len(x) for x in srcs]))
            logp = torch.log_softmax(model.generator(dec_out).float(), dim=-1)
            gold = logp.gather(2, tgt[:, 1:]).squeeze(-1)
            mask = tgt[:, 1:, 0] != pad_t
            for j, i in enumerate(idx):
                out[i] = float(gold[j][mask[j]].sum())
    with open(out_path, "w", encoding="utf-8") as fh:
        fh.write("".join(f"{x:.6f}\n" for x in out))


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:]
    {"convert": convert, "score": score}[cmd](*rest)  # type: ignore[operator]
