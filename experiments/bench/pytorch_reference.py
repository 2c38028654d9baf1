"""PyTorch eager reference for the bench workloads W1-W3 and W5 of experiments/bench/WORKLOADS.md.

Runs the same model definition as the project's `bench` binary, on the same
machine, so that speed ratios are measured in one run rather than across
machines and days:

    python3 experiments/bench/pytorch_reference.py --workload W1 --threads 1

Prints one JSON object per measurement with the keys the bench binary uses
(`workload`, `threads`, `median_ms`, `min_ms`, `max_ms`, `tokens_per_s`).
Needs `pip install torch numpy` (CPU is enough).
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class MHA(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h, self.dk = h, d // h
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, kv, mask):
        b, tq, d = x.shape
        tk = kv.shape[1]
        q = self.q(x).view(b, tq, self.h, self.dk).transpose(1, 2)
        k = self.k(kv).view(b, tk, self.h, self.dk).transpose(1, 2)
        v = self.v(kv).view(b, tk, self.h, self.dk).transpose(1, 2)
        s = q @ k.transpose(-1, -2) / math.sqrt(self.dk)
        if mask is not None:
            s = s + mask  # additive, -inf above the diagonal
        p = s.softmax(-1)  # no dropout on attention weights
        return self.o((p @ v).transpose(1, 2).reshape(b, tq, d))


class FFN(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.w1, self.w2 = nn.Linear(d, f), nn.Linear(f, d)

    def forward(self, x):
        return self.w2(F.relu(self.w1(x)))  # no dropout after ReLU


class EncoderLayer(nn.Module):
    def __init__(self, d, h, f, p):
        super().__init__()
        self.attn, self.ffn = MHA(d, h), FFN(d, f)
        self.n1, self.n2 = nn.LayerNorm(d, eps=1e-5), nn.LayerNorm(d, eps=1e-5)
        self.drop = nn.Dropout(p)

    def forward(self, x):
        x = self.n1(x + self.drop(self.attn(x, x, None)))
        return self.n2(x + self.drop(self.ffn(x)))


class DecoderLayer(nn.Module):
    def __init__(self, d, h, f, p):
        super().__init__()
        self.self_attn, self.cross, self.ffn = MHA(d, h), MHA(d, h), FFN(d, f)
        self.n = nn.ModuleList(nn.LayerNorm(d, eps=1e-5) for _ in range(3))
        self.drop = nn.Dropout(p)

    def forward(self, y, mem, causal):
        y = self.n[0](y + self.drop(self.self_attn(y, y, causal)))
        y = self.n[1](y + self.drop(self.cross(y, mem, None)))
        return self.n[2](y + self.drop(self.ffn(y)))


def sinusoid(t, d):
    pos = torch.arange(t, dtype=torch.float64)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float64)
    ang = pos / 10000 ** (i / d)
    pe = torch.zeros(t, d, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = ang.sin(), ang.cos()
    return pe.float()


class Seq2Seq(nn.Module):
    def __init__(self, v, d, h, f, n, p, t):
        super().__init__()
        self.d = d
        self.emb = nn.Parameter(torch.randn(v, d) * d ** -0.5)  # shared, tied
        self.enc = nn.ModuleList(EncoderLayer(d, h, f, p) for _ in range(n))
        self.dec = nn.ModuleList(DecoderLayer(d, h, f, p) for _ in range(n))
        self.drop = nn.Dropout(p)
        self.register_buffer("pe", sinusoid(t, d))

    def embed(self, ids):
        return self.drop(self.emb[ids] * math.sqrt(self.d) + self.pe[: ids.shape[1]])

    def forward(self, src, tgt, causal):
        x = self.embed(src)
        for layer in self.enc:
            x = layer(x)
        y = self.embed(tgt)
        for layer in self.dec:
            y = layer(y, x, causal)
        return y @ self.emb.t()  # tied output projection, no bias


def timed(step, warmup, steps):
    t = time.perf_counter()
    step()
    first = (time.perf_counter() - t) * 1e3
    for _ in range(warmup - 1):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return first, times


def w1(args):
    torch.manual_seed(0)
    v, d, b, s, t = 1000, 256, 32, 32, 32
    model = Seq2Seq(v, d, 4, 1024, 3, 0.1, 64).train()
    opt = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: d ** -0.5 * min((i + 1) ** -0.5, (i + 1) * 4000 ** -1.5))
    src, tgt, labels = (torch.randint(0, v, (b, n)) for n in (s, t, t))
    causal = torch.full((t, t), float("-inf")).triu(1)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(src, tgt, causal)
        loss = F.cross_entropy(logits.reshape(-1, v), labels.reshape(-1), label_smoothing=0.1)
        loss.backward()
        opt.step()
        sched.step()

    return "W1 train step", timed(step, args.warmup, args.steps), b * t


def layer(name, d, h, f, b, t, args):
    torch.manual_seed(0)
    layer = EncoderLayer(d, h, f, 0.1).train()
    x = torch.randn(b, t, d)

    def step():
        layer.zero_grad(set_to_none=True)
        layer(x).sum().backward()

    return name, timed(step, args.warmup, args.steps), b * t


# --- W5: decoding with a key/value cache (written out here: the same
# algorithm as the project's, so that the comparison is of engines) ---


def heads(x, h):
    b, t, d = x.shape
    return x.view(b, t, h, d // h).transpose(1, 2)  # (B, H, T, Dk)


def cached_attention(mha, x, k, v):
    """Queries from x (R, 1, D) against cached k, v (R, H, Tk, Dk)."""
    r, tq, d = x.shape
    q = heads(mha.q(x), mha.h)
    p = (q @ k.transpose(-1, -2) / math.sqrt(mha.dk)).softmax(-1)
    return mha.o((p @ v).transpose(1, 2).reshape(r, tq, d))


class Decoder:
    """Incremental decoding of a Seq2Seq in eval mode: cross-attention keys
    and values projected once per source, self-attention ones appended per
    step (torch.cat), rows reordered with index_select (beam search)."""

    def __init__(self, model, src):
        self.m = model
        x = model.embed(src)
        for layer in model.enc:
            x = layer(x)
        self.cross = [(heads(l.cross.k(x), l.cross.h), heads(l.cross.v(x), l.cross.h)) for l in model.dec]
        self.selfkv = [None] * len(model.dec)
        self.pos = 0

    def reorder(self, idx):
        self.cross = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in self.cross]
        self.selfkv = [None if kv is None else (kv[0].index_select(0, idx), kv[1].index_select(0, idx))
                       for kv in self.selfkv]

    def step(self, tokens):
        m = self.m
        y = m.emb[tokens][:, None, :] * math.sqrt(m.d) + m.pe[self.pos: self.pos + 1]  # (R, 1, D)
        self.pos += 1
        for i, l in enumerate(m.dec):
            a = l.self_attn
            k, v = heads(a.k(y), a.h), heads(a.v(y), a.h)
            if self.selfkv[i] is not None:
                k = torch.cat([self.selfkv[i][0], k], 2)
                v = torch.cat([self.selfkv[i][1], v], 2)
            self.selfkv[i] = (k, v)
            y = l.n[0](y + cached_attention(a, y, k, v))
            y = l.n[1](y + cached_attention(l.cross, y, *self.cross[i]))
            y = l.n[2](y + l.ffn(y))
        return (y[:, 0] @ m.emb.t()).log_softmax(-1)  # (R, V)


def uncached_step(model, mem, prefix):
    """The reference without a cache: the decoder over the whole prefix."""
    y = model.embed(prefix)
    t = prefix.shape[1]
    causal = torch.full((t, t), float("-inf")).triu(1)
    for layer in model.dec:
        y = layer(y, mem, causal)
    return (y[:, -1] @ model.emb.t()).log_softmax(-1)


def w5(args):
    torch.manual_seed(0)
    v, d, steps, bos = 1000, 256, 32, 1
    model = Seq2Seq(v, d, 4, 1024, 3, 0.1, 64).eval()
    g = torch.Generator().manual_seed(1234)
    greedy_src = torch.randint(0, v, (32, 32), generator=g)
    beam_src = torch.randint(0, v, (8, 32), generator=g)
    runs = min(args.steps, 5)

    def encode(src):
        x = model.embed(src)
        for layer in model.enc:
            x = layer(x)
        return x

    def greedy(cached):
        src = greedy_src
        tokens = torch.full((src.shape[0],), bos)
        out = [tokens]
        dec = Decoder(model, src) if cached else None
        mem = None if cached else encode(src)
        for _ in range(steps):  # no end token: exactly 32 tokens
            lp = dec.step(tokens) if cached else uncached_step(model, mem, torch.stack(out, 1))
            tokens = lp.argmax(-1)
            out.append(tokens)
        return torch.stack(out[1:], 1)

    def beam(cached, k=4, alpha=0.6):
        src = beam_src
        n = src.shape[0]
        rows = torch.arange(n).repeat_interleave(k)  # k beams per source
        # Each source encoded once, its keys/values (or memory) repeated per beam.
        dec = Decoder(model, src) if cached else None
        if cached:
            dec.reorder(rows)
        mem = None if cached else encode(src).index_select(0, rows)
        scores = torch.full((n, k), float("-inf"))
        scores[:, 0] = 0.0  # one live beam at the start
        prefix = torch.full((n * k, 1), bos)
        for _ in range(steps):
            lp = dec.step(prefix[:, -1]) if cached else uncached_step(model, mem, prefix)
            cand = (scores.reshape(-1, 1) + lp).reshape(n, k * v)
            scores, flat = cand.topk(k, -1)  # (N, k)
            beam_idx = (flat // v + torch.arange(n)[:, None] * k).reshape(-1)
            prefix = torch.cat([prefix.index_select(0, beam_idx), (flat % v).reshape(-1, 1)], 1)
            if cached:
                dec.reorder(beam_idx)
        lp_len = ((5 + steps) / 6) ** alpha  # GNMT length penalty, the same for every beam here
        best = (scores / lp_len).argmax(-1)
        return prefix.view(n, k, -1)[torch.arange(n), best, 1:]

    with torch.no_grad():  # the cache must not change what is decoded
        assert torch.equal(greedy(True), greedy(False)), "W5: cached greedy differs from uncached"
        assert torch.equal(beam(True), beam(False)), "W5: cached beam differs from uncached"
    results = []
    for cached in (True, False):
        tag = "cached" if cached else "uncached"
        for name, fn, tokens in ((f"W5 greedy {tag}", greedy, 32 * 32), (f"W5 beam4 {tag}", beam, 8 * 4 * 32)):
            with torch.no_grad():
                first, times = timed(lambda: fn(cached), 1, runs)
            results.append((name, (first, times), tokens))
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", default="all", choices=["W1", "W2", "W3", "W5", "all"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = []
    if args.workload in ("W1", "all"):
        runs.append(w1)
    if args.workload in ("W2", "all"):
        runs.append(lambda a: layer("W2 base layer", 512, 8, 2048, 8, 128, a))
    if args.workload in ("W3", "all"):
        runs.append(lambda a: layer("W3 long attn", 256, 4, 1024, 2, 512, a))
    results = [run(args) for run in runs]
    if args.workload in ("W5", "all"):
        results += w5(args)
    for name, (first, times), tokens in results:
        med = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
        print(json.dumps({
            "workload": name, "threads": args.threads, "framework": "pytorch " + torch.__version__,
            "median_ms": med, "min_ms": times[0], "max_ms": times[-1], "first_step_ms": first,
            "tokens_per_s": tokens / (med / 1e3),
        }), flush=True)


if __name__ == "__main__":
    main()
