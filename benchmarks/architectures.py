"""Many `transformers` architectures through torch.compile(backend="warpweave") on the
CPU (issue 14: "no transformers architecture tried the same way fails or differs from
eager"): tiny configs with random weights, float32, each in a process of its own under
strict mode. Per architecture: the first output's largest difference from eager
(relative to its largest value), every parameter gradient's largest difference from
eager's under a fixed random projection of that output (relative to the largest
gradient), and the operations left to PyTorch.

    python benchmarks/architectures.py [names...]        # all by default
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

V = 96


def _models():
    import torch
    import transformers as t

    def ids(seq=12):
        return torch.randint(0, V, (2, seq), generator=torch.Generator().manual_seed(seq))

    def img():
        return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    lm = dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=32, intermediate_size=64, vocab_size=V,
              max_position_embeddings=64)
    vis = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
               patch_size=8)
    seq2seq = dict(vocab_size=V, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                   decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64)
    return {
        "gpt_neox": lambda: (t.GPTNeoXForCausalLM(t.GPTNeoXConfig(**lm, rotary_pct=0.5)), {"input_ids": ids()}),
        "phi": lambda: (t.PhiForCausalLM(t.PhiConfig(**lm, partial_rotary_factor=0.5)), {"input_ids": ids()}),
        "gemma": lambda: (t.GemmaForCausalLM(t.GemmaConfig(**lm, num_key_value_heads=2, head_dim=8)),
                          {"input_ids": ids()}),
        "gemma2": lambda: (t.Gemma2ForCausalLM(t.Gemma2Config(**lm, num_key_value_heads=2, head_dim=8,
                                                              sliding_window=8)), {"input_ids": ids()}),
        "falcon": lambda: (t.FalconForCausalLM(t.FalconConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2,
                                                              num_attention_heads=4, new_decoder_architecture=True,
                                                              num_kv_heads=2)), {"input_ids": ids()}),
        "bloom": lambda: (t.BloomForCausalLM(t.BloomConfig(vocab_size=V, hidden_size=32, n_layer=2, n_head=4)),
                          {"input_ids": ids()}),
        "gptj": lambda: (t.GPTJForCausalLM(t.GPTJConfig(vocab_size=V, n_embd=32, n_layer=2, n_head=4, rotary_dim=4,
                                                        n_positions=64)), {"input_ids": ids()}),
        "mixtral": lambda: (t.MixtralForCausalLM(t.MixtralConfig(**lm, num_key_value_heads=2, num_local_experts=4,
                                                                 num_experts_per_tok=2)), {"input_ids": ids()}),
        "phi3": lambda: (t.Phi3ForCausalLM(t.Phi3Config(**lm, num_key_value_heads=2, pad_token_id=0)),
                         {"input_ids": ids()}),
        "stablelm": lambda: (t.StableLmForCausalLM(t.StableLmConfig(**lm, num_key_value_heads=2)),
                             {"input_ids": ids()}),
        "starcoder2": lambda: (t.Starcoder2ForCausalLM(t.Starcoder2Config(**lm, num_key_value_heads=2)),
                               {"input_ids": ids()}),
        "olmo": lambda: (t.OlmoForCausalLM(t.OlmoConfig(**lm, pad_token_id=0)), {"input_ids": ids()}),
        "distilbert": lambda: (t.DistilBertModel(t.DistilBertConfig(vocab_size=V, dim=32, n_layers=2, n_heads=4,
                                                                    hidden_dim=64, max_position_embeddings=64)),
                               {"input_ids": ids()}),
        "roberta": lambda: (t.RobertaModel(t.RobertaConfig(**lm)), {"input_ids": ids()}),
        "albert": lambda: (t.AlbertModel(t.AlbertConfig(**lm, embedding_size=16)), {"input_ids": ids()}),
        "electra": lambda: (t.ElectraModel(t.ElectraConfig(**lm, embedding_size=16)), {"input_ids": ids()}),
        "deberta_v2": lambda: (t.DebertaV2Model(t.DebertaV2Config(**lm, relative_attention=True, position_buckets=8,
                                                                  pos_att_type=["p2c", "c2p"])),
                               {"input_ids": ids()}),
        "mbart": lambda: (t.MBartModel(t.MBartConfig(**seq2seq, max_position_embeddings=64)),
                          {"input_ids": ids(), "decoder_input_ids": ids(5)}),
        "whisper": lambda: (t.WhisperModel(t.WhisperConfig(**seq2seq, num_mel_bins=8, max_source_positions=16,
                                                           max_target_positions=32, pad_token_id=0,
                                                           bos_token_id=1, eos_token_id=2,
                                                           decoder_start_token_id=1)),
                            {"input_features": torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(2)),
                             "decoder_input_ids": ids(5)}),
        "clip_vision": lambda: (t.CLIPVisionModel(t.CLIPVisionConfig(**vis)), {"pixel_values": img()}),
        "deit": lambda: (t.DeiTModel(t.DeiTConfig(**vis)), {"pixel_values": img()}),
        "beit": lambda: (t.BeitModel(t.BeitConfig(**vis, use_relative_position_bias=True)), {"pixel_values": img()}),
        "dinov2": lambda: (t.Dinov2Model(t.Dinov2Config(hidden_size=32, mlp_ratio=2, num_hidden_layers=2,
                                                        num_attention_heads=4, image_size=32, patch_size=8)),
                           {"pixel_values": img()}),
        "segformer": lambda: (t.SegformerModel(t.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                                                                 hidden_sizes=[16, 32], num_attention_heads=[1, 2],
                                                                 patch_sizes=[7, 3], strides=[4, 2],
                                                                 mlp_ratios=[2, 2])), {"pixel_values": img()}),
        "regnet": lambda: (t.RegNetModel(t.RegNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                                                        groups_width=8)), {"pixel_values": img()}),
        "convnextv2": lambda: (t.ConvNextV2Model(t.ConvNextV2Config(num_stages=2, hidden_sizes=[16, 32],
                                                                    depths=[1, 1])), {"pixel_values": img()}),
        "levit": lambda: (t.LevitModel(t.LevitConfig(image_size=32, hidden_sizes=[32, 48, 64],
                                                     num_attention_heads=[2, 3, 4], depths=[1, 1, 1],
                                                     key_dim=[8, 8, 8], patch_size=16)), {"pixel_values": img()}),
        "poolformer": lambda: (t.PoolFormerModel(t.PoolFormerConfig(hidden_sizes=[16, 32, 32, 32],
                                                                    depths=[1, 1, 1, 1])), {"pixel_values": img()}),
    }


def _first(value):
    import torch

    if hasattr(value, "to_tuple"):
        value = value.to_tuple()
    return next(x for x in torch.utils._pytree.tree_leaves(value)
                if isinstance(x, torch.Tensor) and x.is_floating_point())


def check(name: str) -> dict:
    """One architecture, in this process: its row of the table."""
    import torch

    import warpweave.torch as wt
    from warpweave.frontend.torch.backend import collecting_reports

    torch.manual_seed(0)
    model, inputs = _models()[name]()
    model.eval()  # dropout off; gradients still flow
    compiled = torch.compile(model, backend=wt.backend)
    with torch.no_grad(), collecting_reports() as reports:
        want, got = _first(model(**inputs)), _first(compiled(**inputs))
    row = {"model": name, "output_err": float((got - want).abs().max() / want.abs().max())}
    weights = torch.randn(want.shape, generator=torch.Generator().manual_seed(5))
    grads = []
    with collecting_reports() as more:
        for fn in (compiled, model):
            model.zero_grad(set_to_none=True)
            (_first(fn(**inputs)) * weights).sum().backward()
            grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    scale = max(float(g.abs().max()) for g in grads[1].values())
    # torch.compile gives zeros where eager gives None (a parameter the output does not use)
    row["grad_err"] = max(float((grads[0].get(k, torch.zeros_like(g)) - g).abs().max()) / scale
                          for k, g in grads[1].items())
    row["fallbacks"] = sorted({f.op for r in reports + more for f in r.fallbacks})
    return row


def main():
    names = sys.argv[1:] or list(_models())
    if len(names) == 1 and os.environ.get("_ARCH_CHILD"):
        print("ROW", json.dumps(check(names[0])))
        return
    print("| architecture | output err | gradient err | operations left to PyTorch |\n|---|---|---|---|")
    env = dict(os.environ, _ARCH_CHILD="1", WARPWEAVE_STRICT="1")
    for name in names:
        try:
            r = subprocess.run([sys.executable, __file__, name], env=env, capture_output=True, text=True, timeout=600)
            out, err = r.stdout, r.stderr
        except subprocess.TimeoutExpired:
            out, err = "", "timed out after 600 s"
        line = next((ln for ln in out.splitlines() if ln.startswith("ROW ")), None)
        if line is None:
            last = (err.strip().splitlines() or ["no output"])[-1]
            print(f"| {name} | **failed**: {last[:200]} | | |", flush=True)
            continue
        row = json.loads(line[4:])
        fell = ", ".join(op.removeprefix("aten.").removesuffix(".default") for op in row["fallbacks"]) or "none"
        print(f"| {name} | {row['output_err']:.1e} | {row['grad_err']:.1e} | {fell} |", flush=True)


if __name__ == "__main__":
    main()
