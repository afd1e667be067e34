"""Many `transformers` architectures through torch.compile(backend="warpweave") on the
CPU (issue 14: "no transformers architecture tried the same way fails or differs from
eager"): tiny configs with random weights, float32, each in a process of its own under
strict mode. Per architecture: the first output's largest difference from eager
(relative to its largest value), every parameter gradient's largest difference from
eager's under a fixed random projection of that output (relative to the largest
gradient), and the operations left to PyTorch.

    python benchmarks/architectures.py [-j N] [names...]        # all by default; N at a time
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
        **_more(t, torch, ids, img, lm, vis, seq2seq),
    }


def _more(t, torch, ids, img, lm, vis, seq2seq):
    """The architectures added second (2026-12-03)."""
    kv = dict(lm, num_key_value_heads=2)
    t5 = dict(vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=4,
              decoder_start_token_id=0)
    s2s = {"input_ids": ids(), "decoder_input_ids": ids(5)}
    audio = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8,
                 num_conv_pos_embedding_groups=4)
    wave = {"input_values": torch.randn(2, 400, generator=torch.Generator().manual_seed(3))}
    stages = dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1])
    return {
        "gpt2": lambda: (t.GPT2LMHeadModel(t.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64)),
                         {"input_ids": ids()}),
        "llama": lambda: (t.LlamaForCausalLM(t.LlamaConfig(**kv)), {"input_ids": ids()}),
        "mistral": lambda: (t.MistralForCausalLM(t.MistralConfig(**kv, sliding_window=8)), {"input_ids": ids()}),
        "qwen2": lambda: (t.Qwen2ForCausalLM(t.Qwen2Config(**kv)), {"input_ids": ids()}),
        "qwen2_moe": lambda: (t.Qwen2MoeForCausalLM(t.Qwen2MoeConfig(**kv, num_experts=4, num_experts_per_tok=2,
                                                                      moe_intermediate_size=32,
                                                                      shared_expert_intermediate_size=32)),
                              {"input_ids": ids()}),
        "qwen3": lambda: (t.Qwen3ForCausalLM(t.Qwen3Config(**kv, head_dim=8)), {"input_ids": ids()}),
        "granite": lambda: (t.GraniteForCausalLM(t.GraniteConfig(**kv)), {"input_ids": ids()}),
        "cohere": lambda: (t.CohereForCausalLM(t.CohereConfig(**kv)), {"input_ids": ids()}),
        "nemotron": lambda: (t.NemotronForCausalLM(t.NemotronConfig(**kv, head_dim=8)), {"input_ids": ids()}),
        "persimmon": lambda: (t.PersimmonForCausalLM(t.PersimmonConfig(**lm)), {"input_ids": ids()}),
        "olmo2": lambda: (t.Olmo2ForCausalLM(t.Olmo2Config(**kv, pad_token_id=0)), {"input_ids": ids()}),
        "gemma3": lambda: (t.Gemma3ForCausalLM(t.Gemma3TextConfig(**kv, head_dim=8, sliding_window=8)),
                           {"input_ids": ids()}),
        "opt": lambda: (t.OPTForCausalLM(t.OPTConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                                                     num_attention_heads=4, max_position_embeddings=64,
                                                     word_embed_proj_dim=32)), {"input_ids": ids()}),
        "gpt_bigcode": lambda: (t.GPTBigCodeForCausalLM(t.GPTBigCodeConfig(vocab_size=V, n_embd=32, n_layer=2,
                                                                           n_head=4, n_positions=64)),
                                {"input_ids": ids()}),
        "gpt_neo": lambda: (t.GPTNeoForCausalLM(t.GPTNeoConfig(vocab_size=V, hidden_size=32, num_layers=2, num_heads=4,
                                                               attention_types=[[["global", "local"], 1]],
                                                               window_size=8, max_position_embeddings=64)),
                            {"input_ids": ids()}),
        "codegen": lambda: (t.CodeGenForCausalLM(t.CodeGenConfig(vocab_size=V, n_embd=32, n_layer=2, n_head=4,
                                                                 n_positions=64, n_ctx=64, rotary_dim=4)),
                            {"input_ids": ids()}),
        "xglm": lambda: (t.XGLMForCausalLM(t.XGLMConfig(vocab_size=V, d_model=32, num_layers=2, attention_heads=4,
                                                        ffn_dim=64, max_position_embeddings=64)),
                         {"input_ids": ids()}),
        "mpt": lambda: (t.MptForCausalLM(t.MptConfig(vocab_size=V, d_model=32, n_layers=2, n_heads=4, max_seq_len=64,
                                                     expansion_ratio=2)), {"input_ids": ids()}),
        "mamba": lambda: (t.MambaForCausalLM(t.MambaConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2,
                                                           state_size=8, expand=2, conv_kernel=4)),
                          {"input_ids": ids()}),
        "rwkv": lambda: (t.RwkvForCausalLM(t.RwkvConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2,
                                                        attention_hidden_size=32, intermediate_size=64,
                                                        context_length=64)),
                         {"input_ids": ids(), "use_cache": False}),
        "recurrent_gemma": lambda: (t.RecurrentGemmaForCausalLM(t.RecurrentGemmaConfig(
            vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, lru_width=32, attention_window_size=8, block_types=["recurrent", "attention"])),
            {"input_ids": ids()}),
        "jamba": lambda: (t.JambaForCausalLM(t.JambaConfig(**kv, num_experts=2, num_experts_per_tok=1,
                                                           attn_layer_period=2, attn_layer_offset=1,
                                                           expert_layer_period=2, expert_layer_offset=1,
                                                           mamba_d_state=8, mamba_expand=2, use_mamba_kernels=False)),
                          {"input_ids": ids()}),
        "xlnet": lambda: (t.XLNetModel(t.XLNetConfig(vocab_size=V, d_model=32, n_layer=2, n_head=4, d_inner=64)),
                          {"input_ids": ids()}),
        "bert": lambda: (t.BertModel(t.BertConfig(**lm)), {"input_ids": ids()}),
        "funnel": lambda: (t.FunnelModel(t.FunnelConfig(vocab_size=V, block_sizes=[1, 1], num_decoder_layers=1,
                                                        d_model=32, n_head=4, d_head=8, d_inner=64)),
                           {"input_ids": ids()}),
        "longformer": lambda: (t.LongformerModel(t.LongformerConfig(**lm, attention_window=4)), {"input_ids": ids()}),
        "big_bird": lambda: (t.BigBirdModel(t.BigBirdConfig(**lm, block_size=2, num_random_blocks=1)),
                             {"input_ids": ids(32)}),
        "mpnet": lambda: (t.MPNetModel(t.MPNetConfig(**lm)), {"input_ids": ids()}),
        "layoutlm": lambda: (t.LayoutLMModel(t.LayoutLMConfig(**lm)), {"input_ids": ids()}),
        "canine": lambda: (t.CanineModel(t.CanineConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                        intermediate_size=64, num_hash_buckets=64,
                                                        max_position_embeddings=64)), {"input_ids": ids(16)}),
        "squeezebert": lambda: (t.SqueezeBertModel(t.SqueezeBertConfig(**lm, embedding_size=32)),
                                {"input_ids": ids()}),
        "convbert": lambda: (t.ConvBertModel(t.ConvBertConfig(**lm, embedding_size=32)), {"input_ids": ids()}),
        "ibert": lambda: (t.IBertModel(t.IBertConfig(**lm)), {"input_ids": ids()}),
        "roformer": lambda: (t.RoFormerModel(t.RoFormerConfig(**lm, embedding_size=32)), {"input_ids": ids()}),
        "nystromformer": lambda: (t.NystromformerModel(t.NystromformerConfig(**lm, num_landmarks=12,
                                                                             segment_means_seq_len=12)),
                                  {"input_ids": ids()}),
        "data2vec_text": lambda: (t.Data2VecTextModel(t.Data2VecTextConfig(**lm)), {"input_ids": ids()}),
        "t5": lambda: (t.T5Model(t.T5Config(**t5)), s2s),
        "mt5": lambda: (t.MT5Model(t.MT5Config(**t5, feed_forward_proj="gated-gelu")), s2s),
        "longt5": lambda: (t.LongT5Model(t.LongT5Config(**t5, local_radius=4, encoder_attention_type="local",
                                                        global_block_size=4)), s2s),
        "bart": lambda: (t.BartModel(t.BartConfig(**seq2seq, max_position_embeddings=64)), s2s),
        "pegasus": lambda: (t.PegasusModel(t.PegasusConfig(**seq2seq, max_position_embeddings=64)), s2s),
        "marian": lambda: (t.MarianModel(t.MarianConfig(**seq2seq, max_position_embeddings=64, pad_token_id=0,
                                                        decoder_start_token_id=0)), s2s),
        "m2m_100": lambda: (t.M2M100Model(t.M2M100Config(**seq2seq, max_position_embeddings=64)), s2s),
        "speech_to_text": lambda: (t.Speech2TextModel(t.Speech2TextConfig(
            **seq2seq, input_feat_per_channel=8, conv_channels=16, max_source_positions=64, max_target_positions=32)),
            {"input_features": torch.randn(2, 32, 8, generator=torch.Generator().manual_seed(2)),
             "decoder_input_ids": ids(5)}),
        "wav2vec2": lambda: (t.Wav2Vec2Model(t.Wav2Vec2Config(**audio)), wave),
        "hubert": lambda: (t.HubertModel(t.HubertConfig(**audio)), wave),
        "wavlm": lambda: (t.WavLMModel(t.WavLMConfig(**audio, num_buckets=16, max_bucket_distance=32)), wave),
        "sew": lambda: (t.SEWModel(t.SEWConfig(**audio, squeeze_factor=2)), wave),
        "vit": lambda: (t.ViTModel(t.ViTConfig(**vis)), {"pixel_values": img()}),
        "yolos": lambda: (t.YolosModel(t.YolosConfig(**dict(vis, image_size=[32, 32]), num_detection_tokens=4)), {"pixel_values": img()}),
        "data2vec_vision": lambda: (t.Data2VecVisionModel(t.Data2VecVisionConfig(**vis)), {"pixel_values": img()}),
        "swin": lambda: (t.SwinModel(t.SwinConfig(image_size=32, patch_size=2, embed_dim=16, depths=[1, 1],
                                                  num_heads=[2, 2], window_size=4)), {"pixel_values": img()}),
        "swinv2": lambda: (t.Swinv2Model(t.Swinv2Config(image_size=32, patch_size=2, embed_dim=16, depths=[1, 1],
                                                        num_heads=[2, 2], window_size=4)), {"pixel_values": img()}),
        "mobilevit": lambda: _calibrated(t.MobileViTModel(t.MobileViTConfig(
            image_size=32, hidden_sizes=[32, 32, 32], neck_hidden_sizes=[8, 8, 16, 16, 16, 32, 32])),
            {"pixel_values": img()}),
        "efficientnet": lambda: _calibrated(t.EfficientNetModel(t.EfficientNetConfig(
            image_size=32, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320)), {"pixel_values": img()},
            reinit=True),
        "resnet": lambda: (t.ResNetModel(t.ResNetConfig(**stages)), {"pixel_values": img()}),
        "bit": lambda: (t.BitModel(t.BitConfig(**stages, num_groups=8)), {"pixel_values": img()}),
        "convnext": lambda: (t.ConvNextModel(t.ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1])),
                             {"pixel_values": img()}),
        "mobilenet_v2": lambda: _calibrated(t.MobileNetV2Model(t.MobileNetV2Config(
            image_size=32, depth_multiplier=0.25)), {"pixel_values": img()}),
        "focalnet": lambda: (t.FocalNetModel(t.FocalNetConfig(image_size=32, patch_size=4, embed_dim=16,
                                                              depths=[1, 1], focal_levels=[2, 2])),
                             {"pixel_values": img()}),
        "pvt_v2": lambda: (t.PvtV2Model(t.PvtV2Config(image_size=32, hidden_sizes=[16, 32], depths=[1, 1],
                                                      num_attention_heads=[1, 2], sr_ratios=[2, 1],
                                                      patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
                                                      num_encoder_blocks=2)), {"pixel_values": img()}),
        "siglip_vision": lambda: (t.SiglipVisionModel(t.SiglipVisionConfig(**vis)), {"pixel_values": img()}),
    }


def _calibrated(model, inputs, reinit=False):
    """A convolutional model whose activations do not vanish with its random weights:
    PyTorch's default initialisation of its convolutions and linear layers (reinit),
    and batch-norm statistics of one training-mode pass over the inputs."""
    import torch

    for mod in model.modules():
        if reinit and isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            mod.reset_parameters()
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None
    model.train()
    with torch.no_grad():
        model(**inputs)
    return model, inputs


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


def _run(name: str) -> str:
    """One architecture in a process of its own: its line of the table."""
    env = dict(os.environ, _ARCH_CHILD="1", WARPWEAVE_STRICT="1")
    try:
        r = subprocess.run([sys.executable, __file__, name], env=env, capture_output=True, text=True, timeout=600)
        out, err = r.stdout, r.stderr
    except subprocess.TimeoutExpired:
        out, err = "", "timed out after 600 s"
    line = next((ln for ln in out.splitlines() if ln.startswith("ROW ")), None)
    if line is None:
        last = (err.strip().splitlines() or ["no output"])[-1]
        return f"| {name} | **failed**: {last[:200]} | | |"
    row = json.loads(line[4:])
    fell = ", ".join(op.removeprefix("aten.").removesuffix(".default") for op in row["fallbacks"]) or "none"
    return f"| {name} | {row['output_err']:.1e} | {row['grad_err']:.1e} | {fell} |"


def main():
    args = sys.argv[1:]
    jobs = 1
    if args[:1] == ["-j"]:  # -j N: N architectures at a time (rows in the order named)
        jobs, args = int(args[1]), args[2:]
    names = args or list(_models())
    if len(names) == 1 and os.environ.get("_ARCH_CHILD"):
        print("ROW", json.dumps(check(names[0])))
        return
    print("| architecture | output err | gradient err | operations left to PyTorch |\n|---|---|---|---|")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(jobs) as pool:
        for row in pool.map(_run, names):
            print(row, flush=True)


if __name__ == "__main__":
    main()
