#!/usr/bin/env python3
"""Train a small character-level transformer language model with axonml-autograd, then sample from it.

The text is bundled with the repository: by default this project's own README (English prose with
code in it, ~50 k characters), so nothing is downloaded; ``--text`` takes any UTF-8 file. The
encoded text lives on the device, and every training step (drawing random windows with the device
generator, gathering them, forward, backward, AdamW) runs through ``capture`` with no host read.
The validation loss is read every ``--eval-every`` steps for display.

    python scripts/train_charlm.py                        # ~1 minute on 2 CPU cores
    python scripts/train_charlm.py --steps 3000 --layers 4 --dim 128 --out runs/charlm
    python scripts/train_charlm.py --text my_book.txt --sample-length 400

The model is GPT-like: token and position embeddings, ``--layers`` pre-norm blocks of causal
multi-head self-attention and a GELU MLP with residual connections, a final LayerNorm and a linear
head. Learning rate: linear warm-up then cosine decay (``optim.lr_scheduler``), applied by the
replays without rebuilding anything.

Artefacts in ``--out``: ``history.json`` (losses per evaluation, the run's settings and the sample),
``history.png`` (when matplotlib is installed) and ``checkpoint.npz`` (the model's state_dict).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from axonml_autograd import (DeviceError, GradScaler, Tensor, Variable, arange, autocast, bfloat16, capture,
                             float16, no_grad, randint, save, set_default_device)
from axonml_autograd import nn
import axonml_autograd.nn.functional as F
from axonml_autograd.optim import AdamW
from axonml_autograd.optim.lr_scheduler import LambdaLR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--text", default=os.path.join(ROOT, "README.md"), help="UTF-8 text to model")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--context", type=int, default=64, help="characters a prediction sees")
    p.add_argument("--dim", type=int, default=64, help="model width")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate")
    p.add_argument("--warmup", type=int, default=50, help="warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-batches", type=int, default=4)
    p.add_argument("--sample-length", type=int, default=300)
    p.add_argument("--prompt", default="## ")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="device selector (see axonml-devices)")
    p.add_argument("--out", default=os.path.join("runs", "charlm"))
    p.add_argument("--no-capture", action="store_true", help="run every step eagerly")
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"],
                   help="mixed precision: float32 weights, products in bfloat16/float16 under autocast; "
                        "fp16 adds a GradScaler")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--max-val-loss", type=float, default=None,
                   help="exit with status 1 if the final validation loss is above this (for tests)")
    args = p.parse_args(argv)
    if args.dim % args.heads:
        p.error(f"--dim {args.dim} is not a multiple of --heads {args.heads}")
    return args


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, heads, context, dropout):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        b, t, d = x.shape()
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).chunk(3, 0)
        q, k, v = (z.squeeze(0) for z in (q, k, v))                         # [b, heads, t, head_dim]
        # softmax(q k^T / sqrt(d) + causal mask) v, one op (fused where the device allows; under
        # autocast all of it runs in the low dtype, as torch's)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.drop.p if self.training else 0.0,
                                             is_causal=True)
        out = out.permute(0, 2, 1, 3).reshape(b, t, d)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, dim, heads, context, dropout):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, context, dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    def __init__(self, vocab, dim, heads, layers, context, dropout):
        super().__init__()
        self.context = context
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(context, dim)
        self.blocks = nn.ModuleList([Block(dim, heads, context, dropout) for _ in range(layers)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)
        self.register_buffer("where", arange(context), persistent=False)

    def forward(self, ids):
        t = ids.shape()[-1]
        where = self.where if t == self.context else arange(t)
        x = self.tokens(ids) + self.positions(where)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def windows(data: Variable, batch: int, context: int, offsets: Tensor) -> tuple:
    """Inputs and next-character targets [batch, context] from random start positions, on the device."""
    idx = offsets.reshape([batch, 1]) + arange(context + 1).reshape([1, context + 1])
    chunk = data.index_select(0, idx.reshape([-1])).reshape([batch, context + 1])
    return chunk[:, :context], chunk[:, 1:]


def save_plot(history, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train_loss"] for h in history], label="train")
    ax.plot(steps, [h["val_loss"] for h in history], label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / character)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def sample(model, stoi, itos, prompt, length, temperature, rng) -> str:
    """Characters drawn one at a time (each draw reads the last position's logits: the user asked)."""
    ids = [stoi.get(c, 0) for c in prompt] or [0]
    model.eval()
    with no_grad():
        for _ in range(length):
            window = ids[-model.context:]
            logits = model(Tensor.from_numpy(np.array([window], np.int32)))
            last = logits.numpy()[0, -1].astype(np.float64) / max(temperature, 1e-6)
            p = np.exp(last - last.max())
            ids.append(int(rng.choice(len(p), p=p / p.sum())))
    model.train()
    return "".join(itos[i] for i in ids)


def main(argv=None):
    args = parse_args(argv)
    if args.device is not None:
        try:
            set_default_device(args.device)
        except DeviceError as e:
            print(f"train_charlm: {e}", file=sys.stderr)
            return 2
    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    stoi = {c: k for k, c in enumerate(chars)}
    itos = dict(enumerate(chars))
    encoded = np.array([stoi[c] for c in text], np.int32)
    split = int(0.9 * len(encoded))
    if split - args.context - 1 <= 0 or len(encoded) - split - args.context - 1 <= 0:
        print(f"train_charlm: {args.text} is too short for a context of {args.context}", file=sys.stderr)
        return 2
    train_data, val_data = Variable(Tensor.from_numpy(encoded[:split])), Variable(Tensor.from_numpy(encoded[split:]))

    from axonml_autograd import manual_seed
    manual_seed(args.seed)
    model = CharTransformer(len(chars), args.dim, args.heads, args.layers, args.context, args.dropout)
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.ndim() == 2]
    other = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.ndim() == 2)]
    opt = AdamW([{"params": decay, "weight_decay": args.weight_decay}, {"params": other, "weight_decay": 0.0}],
                lr=args.lr)

    def factor(step):   # linear warm-up, then cosine decay to a tenth
        if step < args.warmup:
            return (step + 1) / args.warmup
        done = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))

    schedule = LambdaLR(opt, factor)
    n_params = sum(p.numel() for p in model.parameters())

    amp = {"off": None, "bf16": bfloat16, "fp16": float16}[args.amp]
    scaler = GradScaler(enabled=args.amp == "fp16")   # bfloat16 has float32's range: no scaling needed

    def train_step():
        offsets = randint(0, split - args.context - 1, [args.batch_size])
        x, y = windows(train_data, args.batch_size, args.context, offsets)
        opt.zero_grad()
        with autocast(dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(model(x).reshape(-1, len(chars)), y.reshape(-1))
        scaler.scale(loss).backward()   # without --amp fp16: plain backward and step
        scaler.step(opt)
        scaler.update()
        return loss

    step_fn = train_step if args.no_capture else capture(train_step)
    val_len = len(encoded) - split

    def validation_loss() -> float:
        model.eval()
        total = 0.0
        with no_grad(), autocast(dtype=amp, enabled=amp is not None):
            for k in range(args.eval_batches):
                offsets = randint(0, val_len - args.context - 1, [args.batch_size], seed=1000 + k)
                x, y = windows(val_data, args.batch_size, args.context, offsets)
                total += F.cross_entropy(model(x).reshape(-1, len(chars)), y.reshape(-1)).item()
        model.train()
        return total / args.eval_batches

    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    bar = None if (args.no_progress or tqdm is None) else tqdm(total=args.steps, unit="step", desc="charlm")
    history, recent = [], []
    start = time.perf_counter()
    for step in range(args.steps):
        loss = step_fn()
        schedule.step()
        recent.append(loss)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            train_loss = float(np.mean([l.item() for l in recent]))   # the reads, once per evaluation
            recent.clear()
            val = validation_loss()
            history.append({"step": step + 1, "train_loss": train_loss, "val_loss": val,
                            "lr": schedule.get_last_lr()[0], "seconds": time.perf_counter() - start})
            if bar is not None:
                bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val:.3f}")
            elif not args.no_progress:
                print(f"step {step + 1}: train {train_loss:.3f}  val {val:.3f}", flush=True)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    text_out = sample(model, stoi, itos, args.prompt, args.sample_length, args.temperature,
                      np.random.default_rng(args.seed))

    os.makedirs(args.out, exist_ok=True)
    save(model.state_dict(), os.path.join(args.out, "checkpoint.npz"))
    final = history[-1]
    summary = {"text": os.path.relpath(args.text), "characters": len(text), "vocabulary": len(chars),
               "parameters": n_params, "steps": args.steps, "seconds": round(seconds, 2),
               "steps_per_second": round(args.steps / seconds, 1), "final_train_loss": final["train_loss"],
               "final_val_loss": final["val_loss"], "uniform_loss": math.log(len(chars)),
               "captured": not args.no_capture, "settings": vars(args), "sample": text_out, "history": history}
    with open(os.path.join(args.out, "history.json"), "w") as f:
        json.dump(summary, f, indent=1)
    plotted = save_plot(history, os.path.join(args.out, "history.png"))
    print(f"\n{n_params:,} parameters, {len(chars)} characters in the vocabulary, {args.steps} steps in "
          f"{seconds:.1f} s ({args.steps / seconds:.1f} steps/s{', captured' if not args.no_capture else ''})")
    print(f"validation loss {final['val_loss']:.3f} nats/char (uniform guessing: {math.log(len(chars)):.3f}), "
          f"train {final['train_loss']:.3f}")
    print(f"artefacts in {args.out}: history.json{', history.png' if plotted else ''}, checkpoint.npz")
    print("\nsample:\n" + text_out)
    if args.max_val_loss is not None and final["val_loss"] > args.max_val_loss:
        print(f"train_charlm: validation loss {final['val_loss']:.3f} is above --max-val-loss {args.max_val_loss}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
