"""More transformers architectures through torch.compile(backend="warpweave") on the
CPU, strict mode: outputs and every parameter gradient against eager, float32. The
loss is a fixed random projection of the output (a loss with no gradient to speak of,
such as the mean square of a layer norm's output, would compare rounding noise), and
gradient differences are measured against the largest gradient of the model (a
parameter whose true gradient is zero, such as a key projection's bias under softmax,
carries only rounding noise of its own)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the torch.compile backend needs PyTorch")
transformers = pytest.importorskip("transformers", reason="the models are built from transformers configs")

import warpweave.torch as wt  # noqa: E402

VOCAB = 96
TOLERANCE = 1e-4


def _ids(batch=2, seq=12):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seq))


MODELS = {
    "opt": lambda t: (t.OPTForCausalLM(t.OPTConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
        max_position_embeddings=32, word_embed_proj_dim=32)), {"input_ids": _ids()}),
    "qwen2": lambda t: (t.Qwen2ForCausalLM(t.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32)), {"input_ids": _ids()}),
    "bart": lambda t: (t.BartModel(t.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32)),
        {"input_ids": _ids(), "decoder_input_ids": _ids(seq=5)}),
    "gptj": lambda t: (t.GPTJForCausalLM(t.GPTJConfig(  # rotary on every other channel: strided slice_scatter
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=32)), {"input_ids": _ids()}),
    "bloom": lambda t: (t.BloomForCausalLM(t.BloomConfig(  # alibi: repeat
        vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=4)), {"input_ids": _ids()}),
    "mixtral": lambda t: (t.MixtralForCausalLM(t.MixtralConfig(  # mixture of experts: top-k routing
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=32)),
        {"input_ids": _ids()}),
    "deberta_v2": lambda t: (t.DebertaV2Model(t.DebertaV2Config(  # disentangled relative attention
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32, relative_attention=True, position_buckets=8, pos_att_type=["p2c", "c2p"])),
        {"input_ids": _ids()}),
    "swin": lambda t: (t.SwinModel(t.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4)),
        {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))}),
}


def _first_output(value) -> torch.Tensor:
    if hasattr(value, "to_tuple"):
        value = value.to_tuple()
    return next(t for t in torch.utils._pytree.tree_leaves(value) if isinstance(t, torch.Tensor))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_outputs_and_gradients_match_eager(name):
    torch.manual_seed(0)
    model, inputs = MODELS[name](transformers)
    model.eval()  # dropout and drop-path off; gradients still flow
    compiled = torch.compile(model, backend=wt.backend)
    with torch.no_grad():
        want, got = _first_output(model(**inputs)), _first_output(compiled(**inputs))
    torch.testing.assert_close(got, want, rtol=TOLERANCE, atol=TOLERANCE * float(want.abs().max()))
    weights = torch.randn(want.shape, generator=torch.Generator().manual_seed(5))
    grads = []
    for fn in (compiled, model):
        model.zero_grad(set_to_none=True)
        (_first_output(fn(**inputs)) * weights).sum().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert set(grads[0]) == set(grads[1])
    scale = max(float(g.abs().max()) for g in grads[1].values())
    for k, g in grads[1].items():
        torch.testing.assert_close(grads[0][k], g, rtol=0, atol=TOLERANCE * scale, msg=lambda m: f"{k}: {m}")
