"""A model zoo through torch.compile(backend="warpweave"), CPU tier: tiny transformers
configurations with random weights (fixed seeds), strict mode. Outputs, and for the
training cases every parameter's gradient, against eager PyTorch; the set of operation
kinds that run in PyTorch is asserted exactly per model, so that lost coverage fails."""
from __future__ import annotations

import pytest

torch = pytest.importorskip(
    "torch", reason="the torch.compile backend needs PyTorch (.ci/run installs torch==2.13.0, the CPU build)")
transformers = pytest.importorskip(
    "transformers", reason="the zoo builds its models from transformers configs (the test extra installs it)")

import warpweave.torch as wt  # noqa: E402
from warpweave.frontend.torch.backend import collecting_reports  # noqa: E402

TOLERANCE = 1e-4  # float32: largest difference from eager, relative to eager's largest magnitude
SEQ, VOCAB = 12, 96

# What stays in PyTorch, by design: convolutions, attention's fused kernel, in-place
# updates of batch-norm statistics. Matrix products compile on the cpu target (option
# contractions="auto"); gathers (embeddings, the loss's target gather) and scatter-adds
# (their backward) compile at any size; padding and pooling compile (as window
# reductions) at these sizes.
SDPA = {"aten._scaled_dot_product_flash_attention_for_cpu.default"}
SDPA_BACKWARD = {"aten._scaled_dot_product_flash_attention_for_cpu_backward.default"}
CONV = {"aten.convolution.default"}
FALLBACKS = {
    "gpt2": SDPA,
    "gpt2-eager": set(),
    "gpt2-train": SDPA | SDPA_BACKWARD,
    "llama": SDPA,
    "llama-train": SDPA | SDPA_BACKWARD,
    "mistral": SDPA,
    "bert": SDPA,
    "t5": SDPA,
    "vit": CONV | SDPA,
    "vit-train": CONV | SDPA | SDPA_BACKWARD | {"aten.convolution_backward.default"},
    "resnet": CONV,
    "resnet-train": CONV | {"aten.convolution_backward.default", "aten.copy_.default"},
    "convnext": CONV,
    "mobilenet": CONV,
}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield


def _tensors(value):
    if hasattr(value, "to_tuple"):
        value = value.to_tuple()
    return [t for t in torch.utils._pytree.tree_leaves(value) if isinstance(t, torch.Tensor)]


def assert_close(got, want, what):
    scale = max(want.detach().abs().max().item(), 1e-2) if want.numel() else 1.0
    torch.testing.assert_close(got, want, rtol=TOLERANCE, atol=TOLERANCE * scale, msg=lambda m: f"{what}: {m}")


def fallbacks(reports) -> set[str]:
    return {f.op for r in reports for f in r.fallbacks}


def check_inference(model, inputs: dict, expected: set[str], **compile_options):
    model.eval()
    with torch.no_grad():
        want = _tensors(model(**inputs))
        with collecting_reports() as reports:
            got = _tensors(torch.compile(model, backend=wt.backend, **compile_options)(**inputs))
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, f"{type(model).__name__} output {k}")
    assert reports and all(r.programs for r in reports), [str(r) for r in reports]
    assert fallbacks(reports) == expected, (sorted(fallbacks(reports)), [str(r) for r in reports])


def check_training(model, inputs: dict, loss_of, expected: set[str]):
    """One forward and backward (model in its current mode): the loss and every
    parameter's gradient against eager."""
    grads, losses = [], []
    with collecting_reports() as reports:
        for fn in (torch.compile(model, backend=wt.backend), model):
            model.zero_grad(set_to_none=True)
            loss = loss_of(fn(**inputs))
            loss.backward()
            losses.append(loss.detach())
            grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert_close(losses[0], losses[1], "loss")
    named = dict(model.named_parameters())
    assert set(grads[0]) == set(grads[1]) == {n for n, p in named.items() if p.requires_grad}
    for name in grads[1]:
        assert_close(grads[0][name], grads[1][name], f"gradient of {name}")
    kinds = {r.name.split("_")[0] for r in reports}
    assert kinds == {"backward", "forward"} and all(r.programs for r in reports), [str(r) for r in reports]
    assert fallbacks(reports) == expected, (sorted(fallbacks(reports)), [str(r) for r in reports])


def token_ids(seq=SEQ, batch=2):
    return torch.randint(0, VOCAB, (batch, seq))


def images(channels=3, size=32):
    return torch.randn(2, channels, size, size)


# ----------------------------------------------------------------------------- models

def gpt2(attn="sdpa", vocab=VOCAB):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation=attn)
    return transformers.GPT2LMHeadModel(config)


def llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                      attn_implementation="sdpa")
    return transformers.LlamaForCausalLM(config)


def lm_loss(out):
    return out.loss


def test_gpt2_training():
    ids = token_ids()
    check_training(gpt2().eval(), {"input_ids": ids, "labels": ids}, lm_loss, FALLBACKS["gpt2-train"])


def test_real_vocabularies_compile_their_embeddings():
    """GPT-2's and BERT's own vocabularies (50257 and 30522 tokens) at a tiny width: the
    token embeddings (gathers) and, in a training step, their backward (scatter-adds)
    compile; gradients match eager's."""
    ids = torch.randint(0, 50257, (2, SEQ))
    check_inference(gpt2(vocab=50257), {"input_ids": ids}, FALLBACKS["gpt2"])
    check_training(gpt2(vocab=50257).eval(), {"input_ids": ids, "labels": ids}, lm_loss, FALLBACKS["gpt2-train"])
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32, attn_implementation="sdpa")
    check_inference(transformers.BertModel(config), {"input_ids": torch.randint(0, 30522, (2, SEQ))},
                    FALLBACKS["bert"])


def test_gpt2_dynamic_sequence_lengths():
    model = gpt2().eval()
    compiled = torch.compile(model, backend=wt.backend, dynamic=True)
    with torch.no_grad(), collecting_reports() as reports:
        for seq in (5, 9, 16):
            ids = token_ids(seq)
            assert_close(compiled(input_ids=ids).logits, model(input_ids=ids).logits, f"logits, length {seq}")
    assert len(reports) == 3 and all(r.programs for r in reports), [str(r) for r in reports]
    assert fallbacks(reports) == FALLBACKS["gpt2"], (sorted(fallbacks(reports)), [str(r) for r in reports])


def test_gpt2_generate_gives_eager_tokens():
    """Greedy decoding with a key-value cache, on GPT-2's eager attention (the other
    tests run its sdpa attention)."""
    model = gpt2("eager").eval()
    ids = token_ids(6, batch=1)
    settings = {"max_new_tokens": 3, "do_sample": False, "pad_token_id": 0}
    want = model.generate(ids, **settings)
    model.forward = torch.compile(model.forward, backend=wt.backend)
    with collecting_reports() as reports:
        got = model.generate(ids, **settings)
    assert torch.equal(got, want), (got, want)
    assert reports and all(r.programs for r in reports), [str(r) for r in reports]
    assert fallbacks(reports) == FALLBACKS["gpt2-eager"], (sorted(fallbacks(reports)), [str(r) for r in reports])


def test_llama_inference():
    check_inference(llama(), {"input_ids": token_ids()}, FALLBACKS["llama"])


def test_llama_training():
    ids = token_ids()
    check_training(llama().eval(), {"input_ids": ids, "labels": ids}, lm_loss, FALLBACKS["llama-train"])


def test_mistral_sliding_window_inference():
    torch.manual_seed(0)
    config = transformers.MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                        sliding_window=4, attn_implementation="sdpa")  # window < sequence
    model = transformers.MistralForCausalLM(config)
    check_inference(model, {"input_ids": token_ids()}, FALLBACKS["mistral"])


def test_bert_inference():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32, attn_implementation="sdpa")
    model = transformers.BertModel(config)
    ids = token_ids()
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0  # padding in the second sequence
    check_inference(model, {"input_ids": ids, "attention_mask": mask}, FALLBACKS["bert"])


@pytest.mark.slow
def test_t5_inference():
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, decoder_start_token_id=0)
    model = transformers.T5ForConditionalGeneration(config)
    check_inference(model, {"input_ids": token_ids(), "decoder_input_ids": token_ids(5)}, FALLBACKS["t5"])


def vit():
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64, attn_implementation="sdpa")
    return transformers.ViTModel(config, add_pooling_layer=False)


def test_vit_inference():
    check_inference(vit(), {"pixel_values": images()}, FALLBACKS["vit"])


def test_vit_training():
    weights = torch.randn(2, 17, 32)
    check_training(vit().eval(), {"pixel_values": images()}, lambda out: (out.last_hidden_state * weights).sum(),
                   FALLBACKS["vit-train"])


def resnet():
    torch.manual_seed(0)
    config = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic")
    return transformers.ResNetModel(config)


def test_resnet_inference():
    check_inference(resnet(), {"pixel_values": images()}, FALLBACKS["resnet"])


def test_resnet_training():
    weights = torch.randn(2, 32, 1, 1)
    check_training(resnet().train(), {"pixel_values": images()}, lambda out: (out.pooler_output * weights).sum(),
                   FALLBACKS["resnet-train"])


def test_convnext_inference():
    torch.manual_seed(0)
    config = transformers.ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], image_size=32)
    check_inference(transformers.ConvNextModel(config), {"pixel_values": images()}, FALLBACKS["convnext"])


@pytest.mark.slow  # about 20 s: 52 programs to compile
def test_mobilenet_v2_inference():
    torch.manual_seed(0)
    config = transformers.MobileNetV2Config(depth_multiplier=0.35, image_size=32)
    check_inference(transformers.MobileNetV2Model(config), {"pixel_values": images()}, FALLBACKS["mobilenet"])
