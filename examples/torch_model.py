"""Train a small GPT-style transformer with torch.compile(backend="warpweave").

    python examples/torch_model.py            # CPU (or CUDA where there is a GPU)

The model learns a toy sequence task (each token is the one three places back, plus
one) for a few optimizer steps; the compiled model's losses are printed next to eager
PyTorch's from the same starting weights, followed by warpweave's explanation of what
it compiled and what stayed in PyTorch.
"""
from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import warpweave.torch

VOCAB, SEQ, WIDTH, HEADS, LAYERS = 32, 32, 64, 4, 2


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
        self.fc, self.out = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)
        self.register_buffer("causal", torch.tril(torch.ones(SEQ, SEQ, dtype=torch.bool)))

    def attention(self, x):
        b, t, c = x.shape
        q, k, v = (z.view(b, t, HEADS, c // HEADS).transpose(1, 2) for z in self.qkv(x).split(c, 2))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(c // HEADS)
        weights = scores.masked_fill(~self.causal[:t, :t], float("-inf")).softmax(-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, t, c))

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(VOCAB, WIDTH), nn.Embedding(SEQ, WIDTH)
        self.blocks = nn.Sequential(*(Block() for _ in range(LAYERS)))
        self.ln, self.head = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, VOCAB, bias=False)

    def forward(self, idx, targets):
        x = self.tokens(idx) + self.positions(torch.arange(idx.shape[1], device=idx.device))
        logits = self.head(self.ln(self.blocks(x)))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def batch(device, size=16):
    start = torch.randint(0, VOCAB, (size, 3), device=device)
    seq = [start[:, k] for k in range(3)]
    while len(seq) < SEQ + 1:
        seq.append((seq[-3] + 1) % VOCAB)
    seq = torch.stack(seq, 1)
    return seq[:, :-1], seq[:, 1:]


def train(model, data, steps):
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for idx, targets in data[:steps]:
        loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    eager = GPT().to(device)
    model = copy.deepcopy(eager)
    data = [batch(device) for _ in range(30)]
    started = time.perf_counter()
    compiled_losses = train(torch.compile(model, backend="warpweave"), data, 30)
    print(f"warpweave: 30 steps in {time.perf_counter() - started:.1f} s (the first compiles)")
    eager_losses = train(eager, data, 30)
    print("step   warpweave   eager")
    for step in (0, 1, 2, 5, 10, 20, 29):
        print(f"{step:4d}   {compiled_losses[step]:9.4f}   {eager_losses[step]:6.4f}")
    print()
    print(warpweave.torch.explain(model, *data[0]))


if __name__ == "__main__":
    main()
