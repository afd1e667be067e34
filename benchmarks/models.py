"""Real models through torch.compile (issue 14): eager, Inductor (default mode,
`dynamic=False`) and warpweave in one process on the same inputs and weights.

Per model and phase (inference; a training step: forward, loss, backward):
step time (median of CUDA-event timed steps after warm-up), the first call cold
(fresh compile caches), kernels launched per step (torch.profiler), and the largest
relative error against eager (outputs, and every parameter gradient in training).
With --warm, each backend's first call is timed again in a fresh process that
shares the cold run's cache directories (the disk caches warm).

    PYTHONPATH=$PWD python3 benchmarks/models.py --out $OUT [--models gpt2,bert] [--phases infer,train]
    PYTHONPATH=$PWD python3 benchmarks/models.py --device cpu --dtype float32 --small   # CPU table
    (on a shared machine, add --threads 1 --interleave --steps 200: medians of one-thread
    steps, the backends' steps taken in turn; with --clock thread, each step's CPU time on
    the calling thread, which one thread does all of and which other processes' load
    disturbs far less than wall time)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import warpweave.torch
from warpweave.frontend.torch.backend import collecting_reports

BACKENDS = ("eager", "inductor", "warpweave")


def build(name: str, small: bool):
    """(model, make_inputs(batch-first tensors), loss(outputs)) from configs, random weights."""
    import transformers as tf

    if name == "gpt2":
        cfg = tf.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000) if small else tf.GPT2Config()
        model, batch, seq = tf.GPT2LMHeadModel(cfg), (2 if small else 8), (32 if small else 1024)
        return model, lambda d: dict(input_ids=torch.randint(0, cfg.vocab_size, (batch, seq), device=d)), \
            lambda out: out.logits.float().logsumexp(-1).mean()
    if name == "llama":
        cfg = tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=1000) if small else \
            tf.LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                           num_key_value_heads=4, vocab_size=32000)
        model, batch, seq = tf.LlamaForCausalLM(cfg), (2 if small else 4), (32 if small else 1024)
        return model, lambda d: dict(input_ids=torch.randint(0, cfg.vocab_size, (batch, seq), device=d)), \
            lambda out: out.logits.float().logsumexp(-1).mean()
    if name == "bert":
        cfg = tf.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                            vocab_size=1000) if small else tf.BertConfig()
        model, batch, seq = tf.BertModel(cfg), (2 if small else 16), (32 if small else 512)
        return model, lambda d: dict(input_ids=torch.randint(0, cfg.vocab_size, (batch, seq), device=d)), \
            lambda out: out.last_hidden_state.float().pow(2).mean()
    if name == "vit":
        cfg = tf.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                           image_size=32, patch_size=8) if small else tf.ViTConfig()
        model, batch = tf.ViTModel(cfg), (2 if small else 64)
        return model, lambda d: dict(pixel_values=torch.randn(batch, 3, cfg.image_size, cfg.image_size, device=d)), \
            lambda out: out.last_hidden_state.float().pow(2).mean()
    if name in ("resnet", "convnext"):  # transformers' ResNet-50 and ConvNeXt-T (no timm: the CPU)
        cfg = (tf.ResNetConfig if name == "resnet" else tf.ConvNextConfig)(
            **(dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1]) if small else {}),
            **(dict(embedding_size=16) if small and name == "resnet" else {}))
        model = (tf.ResNetModel if name == "resnet" else tf.ConvNextModel)(cfg)
        batch, size = (2, 64) if small else (64, 224)
        return model, lambda d: dict(pixel_values=torch.randn(batch, 3, size, size, device=d)), \
            lambda out: out.pooler_output.float().logsumexp(-1).mean()
    if name in ("resnet50", "convnext_tiny"):
        import timm

        model, batch = timm.create_model(name, pretrained=False), (2 if small else 64)
        size = 64 if small else 224
        return model, lambda d: dict(x=torch.randn(batch, 3, size, size, device=d)), \
            lambda out: out.float().logsumexp(-1).mean()
    raise SystemExit(f"unknown model {name}")


def _outputs(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    return [t for t in out if isinstance(t, torch.Tensor)]


def _rel(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def run(args, name: str, phase: str) -> dict:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    model, make_inputs, loss_fn = build(name, args.small)
    model = model.to(device=device, dtype=dtype)
    model.train(phase == "train")
    for m in model.modules():  # dropout off: every backend must compute the same function
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in make_inputs(device).items()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    row = dict(model=name, phase=phase, dtype=args.dtype, device=args.device)
    ref_outs = None
    steps = {}
    base = model
    for backend in args.backends.split(","):
        if args.interleave:  # a model of its own per backend: their compiled code lives side by side
            model = copy.deepcopy(base)
        else:
            model.load_state_dict(state)
            torch._dynamo.reset()
        model.zero_grad(set_to_none=True)
        if backend == "eager":
            fn = model
        else:  # warpweave by its callable: the entry point exists only where it is pip-installed
            fn = torch.compile(model, backend=warpweave.torch.backend if backend == "warpweave" else backend,
                               dynamic=False)

        def step(fn=fn, model=model):
            if phase == "infer":
                with torch.no_grad():
                    return _outputs(fn(**inputs))
            model.zero_grad(set_to_none=True)
            loss = loss_fn(fn(**inputs))
            loss.backward()
            return [loss] + [torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()]

        _sync(device)
        t0 = time.perf_counter()
        with collecting_reports() as reports:
            got = [t.detach().clone() for t in step()]  # compiled code may reuse its buffers later
        _sync(device)
        row[f"{backend}_first_s"] = time.perf_counter() - t0
        if backend == "warpweave":  # what PyTorch ran instead, by operation kind
            fell = [f.op for r in reports for f in r.fallbacks]
            row["warpweave_fallbacks"] = {op: fell.count(op) for op in sorted(set(fell))}
        steps[backend] = step
        if not args.interleave:
            row[f"{backend}_ms"] = _median_ms({backend: step}, device, args)[backend]
        row[f"{backend}_kernels"] = _kernels_per_step(step, device)
        if ref_outs is None:
            ref_outs = got
        else:
            # outputs (or the loss) one by one; gradients as one vector, since a parameter
            # whose exact gradient is zero (a key bias under softmax) has only rounding noise
            n = len(got) if phase == "infer" else 1
            errs = [_rel(a, b) for a, b in zip(got[:n], ref_outs[:n])]
            if phase == "train":
                errs.append(_rel(torch.cat([g.flatten().float() for g in got[1:]]),
                                 torch.cat([g.flatten().float() for g in ref_outs[1:]])))
            row[f"{backend}_rel_err"] = max(errs)
        print(json.dumps({k: v for k, v in row.items() if k.startswith(backend)}), flush=True)
    if args.interleave:
        row.update((f"{b}_ms", ms) for b, ms in _median_ms(steps, device, args).items())
        print(json.dumps({k: v for k, v in row.items() if k.endswith("_ms")}), flush=True)
    return row


def _median_ms(steps: dict, device, args) -> dict:
    """Median step time (ms) of each backend's step after warm-up; with several
    backends, their steps taken in turn (load on a shared machine hits them alike)."""
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times = {b: [] for b in steps}
    for _ in range(args.steps):
        for b, step in steps.items():
            times[b].append(_timed(step, device, args.clock == "thread"))
    return {b: statistics.median(t) * 1e3 for b, t in times.items()}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(step, device, thread_clock: bool = False) -> float:
    if device.type == "cuda":
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        step()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) * 1e-3
    clock = time.thread_time if thread_clock else time.perf_counter
    t0 = clock()
    step()
    return clock() - t0


def _kernels_per_step(step, device) -> int | None:
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type.name == "CUDA")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="gpt2,llama,bert,vit,resnet50,convnext_tiny")
    ap.add_argument("--phases", default="infer,train")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--small", action="store_true", help="tiny configs (the CPU table)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--interleave", action="store_true",
                    help="time the backends' steps in turn (each on its own copy of the model)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for PyTorch and warpweave (default: theirs, every core)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall",
                    help="CPU steps: wall time, or CPU time of the calling thread (use with --threads 1)")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--warm", action="store_true",
                    help="also time each first call in a fresh process sharing the cold run's caches")
    ap.add_argument("--write", default=None,
                    help="record these models.json files (GPU, then CPU) in RESULTS.md and stop")
    ap.add_argument("--command", default=None, help="with --write: the command that produced them")
    args = ap.parse_args()
    if args.write:
        return write_results(args.write.split(","), args.command)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["WARPWEAVE_NUM_THREADS"] = str(args.threads)
    caches = os.environ.get("BENCH_CACHES") or tempfile.mkdtemp(prefix="ww-bench-")
    os.environ.setdefault("WARPWEAVE_CACHE_DIR", os.path.join(caches, "warpweave"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(caches, "inductor"))

    rows = []
    for name in args.models.split(","):
        for phase in args.phases.split(","):
            try:
                row = run(args, name, phase)
            except Exception as exc:  # one failing model must not cost the table
                row = dict(model=name, phase=phase, error=f"{type(exc).__name__}: {exc}"[:400])
                print(row, flush=True)
            if args.warm and "error" not in row:
                env = dict(os.environ, BENCH_CACHES=caches)
                cmd = [sys.executable, __file__, "--models", name, "--phases", phase, "--device", args.device,
                       "--dtype", args.dtype, "--steps", "1", "--warmup", "0", "--out", caches]
                cmd += ["--small"] if args.small else []
                r = subprocess.run(cmd, env=env, capture_output=True, text=True)
                try:
                    with open(os.path.join(caches, "models.json")) as f:
                        warm = json.load(f)["rows"][0]
                    for b in BACKENDS:
                        row[f"{b}_warm_first_s"] = warm.get(f"{b}_first_s")
                except (OSError, KeyError, IndexError, ValueError):
                    row["warm_error"] = r.stderr[-300:]
            rows.append(row)
            with open(os.path.join(args.out, "models.json"), "w") as f:
                json.dump(dict(rows=rows, device=args.device, dtype=args.dtype,
                               gpu=torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                               torch=torch.__version__, date=time.strftime("%Y-%m-%d")), f, indent=1)
    print(markdown(rows))


def markdown(rows) -> str:
    lines = ["| model | phase | eager ms | Inductor ms | warpweave ms | vs Inductor | first call s (eager / Inductor / "
             "warpweave) | warm first s (Inductor / warpweave) | kernels/step (Ind. / ww) | rel. err (Ind. / ww) | "
             "warpweave fallbacks |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['phase']} | **error**: {r['error'][:150]} | | | | | | | | |")
            continue
        f = lambda k, fmt: format(r[k], fmt) if r.get(k) is not None else "—"  # noqa: E731
        lines.append(f"| {r['model']} | {r['phase']} | {f('eager_ms', '.2f')} | {f('inductor_ms', '.2f')} | "
                     f"{f('warpweave_ms', '.2f')} | "
                     f"{_ratio(r)} | {f('eager_first_s', '.1f')} / "
                     f"{f('inductor_first_s', '.1f')} / {f('warpweave_first_s', '.1f')} | "
                     f"{f('inductor_warm_first_s', '.1f')} / {f('warpweave_warm_first_s', '.1f')} | "
                     f"{f('inductor_kernels', 'd')} / {f('warpweave_kernels', 'd')} | "
                     f"{f('inductor_rel_err', '.1e')} / {f('warpweave_rel_err', '.1e')} | {_fallbacks(r)} |")
    return "\n".join(lines)


BEGIN, END = "<!-- models-bench:begin -->", "<!-- models-bench:end -->"


def write_results(paths: list[str], command: str | None) -> None:
    """The models section of RESULTS.md from saved runs."""
    parts = ["## Real models through torch.compile (issue 14): eager, Inductor and warpweave", "",
             "Each model built from its `transformers` (or timm) config with random weights, dropout "
             "off; every backend on the same weights and inputs in one process; Inductor with "
             "`dynamic=False`, a fresh Dynamo state per backend. Step time: median of CUDA-event "
             "(GPU) or wall-clock (CPU) timed steps after warm-up; first call: compile and run with "
             "empty caches; kernels per step from torch.profiler; rel. err: ‖backend − eager‖/‖eager‖ "
             "over the outputs (inference) or the loss and all parameter gradients as one vector "
             "(training).", ""]
    for p in paths:
        with open(p) as f:
            saved = json.load(f)
        parts += [f"### {saved['gpu']} ({saved['device']}), {saved['dtype']}, {saved['date']}, PyTorch "
                  f"{saved['torch']}", "", f"Command: `{command or 'benchmarks/models.py'}` ({p}).", "",
                  markdown(saved["rows"]), ""]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import fusion_suite as fs

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
    fs.write_results_md(path, "\n".join(parts).rstrip(), BEGIN, END)
    print(f"wrote the models section of {path}")


def _fallbacks(r) -> str:
    fell = r.get("warpweave_fallbacks")
    if fell is None:
        return "—"
    return ", ".join(f"{op} ×{n}" for op, n in fell.items()) or "none"


def _ratio(r) -> str:
    return f"{r['inductor_ms'] / r['warpweave_ms']:.2f}×" if r.get("warpweave_ms") and r.get("inductor_ms") else "—"


if __name__ == "__main__":
    main()
