"""The model zoo on the GPU, bfloat16 (GPU tier): the CPU tier's tiny transformers
models through torch.compile(backend="warpweave") in strict mode. bfloat16 results
are judged against a float64 eager reference of the same weights: warpweave's error
(outputs, and for training every parameter gradient) may not exceed a small multiple
of eager bfloat16's own error on the same inputs."""
from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch", reason="the torch.compile backend needs PyTorch")
transformers = pytest.importorskip("transformers", reason="the zoo builds its models from transformers configs")

import warpweave.torch as wt  # noqa: E402
from warpweave.frontend.torch.backend import collecting_reports  # noqa: E402

from .test_models import VOCAB, gpt2, llama, resnet, vit  # noqa: E402

pytestmark = pytest.mark.gpu
ERROR_FACTOR, ERROR_FLOOR = 3.0, 2e-3  # allowed: FACTOR × eager bfloat16's error + FLOOR


@pytest.fixture(autouse=True)
def cuda_and_fresh_dynamo(torch_cuda):
    torch._dynamo.reset()
    yield


def _tensors(value):
    if hasattr(value, "to_tuple"):
        value = value.to_tuple()
    return [t for t in torch.utils._pytree.tree_leaves(value) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.double(), ref.double()
    return float((got - ref).norm() / ref.norm().clamp_min(1e-30))


def _on(model, dtype, inputs):
    model = copy.deepcopy(model).to(device="cuda", dtype=dtype)
    return model, {k: v.to("cuda", dtype) if v.is_floating_point() else v.to("cuda") for k, v in inputs.items()}


def _results(model, inputs, loss_of, compiled: bool):
    fn = torch.compile(model, backend=wt.backend, dynamic=False) if compiled else model
    if loss_of is None:
        with torch.no_grad():
            return _tensors(fn(**inputs))
    model.zero_grad(set_to_none=True)
    loss = loss_of(fn(**inputs))
    loss.backward()
    return [loss.detach()] + [p.grad for p in model.parameters()]


def check(model, inputs: dict, loss_of=None):
    ref = _results(*_on(model, torch.float64, inputs), loss_of, compiled=False)
    eager = _results(*_on(model, torch.bfloat16, inputs), loss_of, compiled=False)
    with collecting_reports() as reports:
        got = _results(*_on(model, torch.bfloat16, inputs), loss_of, compiled=True)
    assert reports and all(r.programs for r in reports), [str(r) for r in reports]
    assert all(p.target == "cuda" for r in reports for p in r.programs)
    assert len(got) == len(ref)
    for k, (g, e, r) in enumerate(zip(got, eager, ref)):
        assert g is not None and g.dtype == e.dtype, k
        assert torch.isfinite(g).all(), f"result {k} has non-finite values"
        assert _rel(g, r) <= ERROR_FACTOR * _rel(e, r) + ERROR_FLOOR, (k, _rel(g, r), _rel(e, r))


def _ids(seq=12, batch=2):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seq))


def _images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def test_gpt2_inference_and_training():
    ids = _ids()
    check(gpt2().eval(), {"input_ids": ids})
    check(gpt2().eval(), {"input_ids": ids, "labels": ids}, lambda out: out.loss)


def test_gpt2_with_a_real_vocabulary_and_batch(monkeypatch):
    """Sizes where the full-size paths start: 50257 logits columns (padded to whole
    16-byte rows, as a measurement chooses on the H200 at full size), embeddings too large for one-hot gathers, and attention
    probabilities with more points than the verifier enumerates ([8, 4, 384, 384] ×
    several tensors)."""
    from warpweave.frontend.torch import backend, pad_matmuls

    monkeypatch.setattr(backend, "pad_matmuls", lambda gm: pad_matmuls.pad_matmuls(gm, faster=lambda sig: True))
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50257, n_positions=384, n_embd=64, n_layer=1, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager")
    ids = torch.randint(0, 50257, (8, 384), generator=torch.Generator().manual_seed(1))
    check(transformers.GPT2LMHeadModel(config).eval(), {"input_ids": ids})
    check(transformers.GPT2LMHeadModel(config).eval(), {"input_ids": ids, "labels": ids}, lambda out: out.loss)


def test_llama_inference_and_training():
    ids = _ids()
    check(llama(), {"input_ids": ids})
    check(llama(), {"input_ids": ids, "labels": ids}, lambda out: out.loss)


def test_bert_inference_with_padding_mask():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32, attn_implementation="sdpa")
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    check(transformers.BertModel(config), {"input_ids": ids, "attention_mask": mask})


def test_vit_inference_and_training():
    check(vit().eval(), {"pixel_values": _images()})
    check(vit().eval(), {"pixel_values": _images()}, lambda out: out.last_hidden_state.float().pow(2).mean())


def test_resnet_inference_and_training():
    check(resnet().eval(), {"pixel_values": _images()})
    check(resnet().train(), {"pixel_values": _images()}, lambda out: out.pooler_output.float().pow(2).mean())
