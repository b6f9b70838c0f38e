"""An LP training job, written as an operator would: plain PyTorch, no hbtui.

torchvision ResNet-50 (random weights, nothing downloaded), SGD with momentum, AMP
(``--amp fp16``: torch.autocast + GradScaler, the default; ``bf16``: autocast, no scaler;
``off``: fp32), batch ``--batch`` (128) of ``--size`` (224) x 224 random images that
live on the GPU (drawn once, not all-zero; labels too). No data loader, so the job is
GPU-bound.

After ``--warmup`` iterations it prints ``ready`` (flushed) and trains until
``--duration`` seconds have passed or it gets SIGTERM/SIGINT, then writes the JSON
result to ``--out``: ``iterations``, ``seconds``, ``it_per_s`` over the whole run after
warm-up, and ``iter_end_mono``: for every measured iteration, when the host saw it
finish on the GPU (``time.monotonic()``, CLOCK_MONOTONIC: comparable with other
processes' timestamps), so an orchestrator can count iterations inside any window.

Completion times: after enqueueing iteration i the loop waits for iteration i-1's CUDA
event, so one iteration is always queued ahead (the host never starves the GPU) and each
timestamp is late by at most the host time of one iteration's launches.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
import traceback
from typing import Any

STOP = False


def log(msg: str) -> None:
    print(f"lp_train: {msg}", file=sys.stderr, flush=True)


def _stop(*_: object) -> None:
    global STOP
    STOP = True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="max seconds after warm-up")
    ap.add_argument("--warmup", type=int, default=10, help="iterations before 'ready'")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", choices=("resnet50", "resnet18", "tiny", "gpt2"),
                    default="resnet50")  # fmt: skip
    ap.add_argument("--layers", type=int, default=12, help="gpt2: transformer layers")
    ap.add_argument("--seq", type=int, default=256, help="gpt2: tokens per sequence")
    ap.add_argument("--compile", choices=("off", "default", "max-autotune-triton"),
                    default="off", help="torch.compile the model; max-autotune-triton: "
                    "Inductor's Triton templates for GEMMs too, no CUDA graphs")  # fmt: skip
    ap.add_argument("--deterministic", action="store_true",
                    help="torch's deterministic settings (bitwise-repeatable runs)")  # fmt: skip
    ap.add_argument("--check-steps", type=int, default=0,
                    help="run this many steps from a fixed seed and write per-step loss, "
                    "output and gradient fingerprints to --out instead of timing")  # fmt: skip
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--amp", choices=("fp16", "bf16", "off"), default="fp16")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    if a.duration <= 0 or a.warmup < 1 or a.batch < 1:
        ap.error("--duration must be > 0, --warmup >= 1, --batch >= 1")
    return a


def build_model(name: str, classes: int, layers: int = 12) -> Any:
    import torch

    if name == "gpt2":  # GPT-2 small's shape, random weights (transformers)
        from transformers import GPT2Config, GPT2LMHeadModel

        # eager attention: matmuls and a softmax, which Inductor turns into Triton kernels
        # (SDPA would call flash-attention kernels that ship no PTX)
        cfg = GPT2Config(n_layer=layers, n_embd=768, n_head=12, n_positions=1024,
                         attn_implementation="eager")  # fmt: skip
        return GPT2LMHeadModel(cfg)

    if name == "tiny":  # smoke tests on CPU: no torchvision needed
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(8, classes),
        )
    import torchvision

    return getattr(torchvision.models, name)(weights=None, num_classes=classes)


def grad_scaler(enabled: bool) -> Any:
    import torch

    try:
        return torch.amp.GradScaler("cuda", enabled=enabled)
    except (AttributeError, TypeError):  # older torch
        return torch.cuda.amp.GradScaler(enabled=enabled)


def run(a: argparse.Namespace) -> dict[str, Any]:
    import torch

    t_start = time.monotonic()
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("lp_train: error: --device cuda but torch.cuda.is_available() is False")
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS' condition
        # warn_only: an op without a deterministic kernel warns instead of ending the run;
        # two plain runs compared (slicing_check.py) show whether the run is repeatable
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
    elif cuda:
        torch.backends.cudnn.benchmark = True
    gpt = a.model == "gpt2"
    model = build_model(a.model, a.classes, a.layers).to(dev)
    fmt = torch.channels_last if a.channels_last and not gpt else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator(device="cpu").manual_seed(a.seed)
    if gpt:
        vocab = model.config.vocab_size
        x = torch.randint(0, vocab, (a.batch, a.seq), generator=gen).to(dev)
        y = x
    else:
        x = torch.randn(a.batch, 3, a.size, a.size, generator=gen).to(dev, memory_format=fmt)
        y = torch.randint(0, a.classes, (a.batch,), generator=gen).to(dev)
    fwd = compiled(model, a.compile)
    if a.amp == "off" or not cuda and a.amp == "fp16":
        amp_dtype = None  # fp16 autocast is a GPU thing; on cpu (smoke) run fp32
    else:
        amp_dtype = torch.float16 if a.amp == "fp16" else torch.bfloat16
    scaler = grad_scaler(cuda and amp_dtype == torch.float16)
    loss_fn = torch.nn.CrossEntropyLoss()

    outs: list[Any] = []

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            if gpt:
                out = fwd(input_ids=x, labels=y)
                loss, logits = out.loss, out.logits
            else:
                logits = fwd(x)
                loss = loss_fn(logits, y)
        scaler.scale(loss).backward()
        if a.check_steps:
            outs[:] = [logits.detach()]
        scaler.step(opt)
        scaler.update()
        return loss

    if a.check_steps:
        return check_run(a, model, step, outs, t_start)

    def event() -> Any:
        if not cuda:
            return None
        e = torch.cuda.Event()
        e.record()
        return e

    for _ in range(a.warmup):
        loss = step()
    if cuda:
        torch.cuda.synchronize(dev)
    first_loss = float(loss.detach())
    if not math.isfinite(first_loss):
        log(f"warning: warm-up loss is {first_loss} (random data; training goes on)")
    print("ready", flush=True)
    t0 = time.monotonic()
    ends: list[float] = []
    prev = None
    stopped_by = "duration"
    while True:
        if STOP:
            stopped_by = "signal"
            break
        if time.monotonic() - t0 >= a.duration:
            break
        loss = step()
        ev = event()
        if prev is not None:
            prev.synchronize()
            ends.append(time.monotonic())
        elif not cuda:
            ends.append(time.monotonic())
        prev = ev
    if prev is not None:
        prev.synchronize()
        ends.append(time.monotonic())
    t1 = time.monotonic()
    last_loss = float(loss.detach())
    n = len(ends)
    res: dict[str, Any] = {
        "iterations": n,
        "seconds": t1 - t0,
        "it_per_s": n / max(1e-9, t1 - t0),
        "start_mono": t0,
        "end_mono": t1,
        "iter_end_mono": ends,
        "stopped_by": stopped_by,
        "startup_s": round(t0 - t_start, 2),
        "warmup": a.warmup,
        "model": a.model,
        "batch": a.batch,
        "size": a.size,
        "amp": a.amp if amp_dtype is not None else "off",
        "channels_last": a.channels_last,
        "seq": a.seq if gpt else None,
        "compile": a.compile,
        "device": a.device,
        "device_name": torch.cuda.get_device_name(dev) if cuda else None,
        "torch": torch.__version__,
        "loss_first": first_loss,
        "loss_last": last_loss,
        "under_hbtui": os.environ.get("HBTUI_CLASS"),
        "mps_pipe": os.environ.get("CUDA_MPS_PIPE_DIRECTORY"),
    }
    return res


def compiled(model: Any, how: str) -> Any:
    import torch

    if how == "off":
        return model
    if how == "default":
        return torch.compile(model)
    import torch._inductor.config as ic

    ic.max_autotune_gemm_backends = "TRITON"  # GEMMs as Triton templates: PTX to slice
    return torch.compile(model, mode="max-autotune-no-cudagraphs")


def fingerprint(t: Any) -> str:
    """An exact fingerprint of a tensor's bits, computed on its device: the words as
    integers, summed plain and position-weighted (integer sums are exact, so any changed
    bit shows)."""
    import torch

    b = t.detach().contiguous().view(torch.uint8).flatten()
    n = b.numel() - b.numel() % 4
    w = b[:n].view(torch.int32).to(torch.int64)
    idx = torch.arange(w.numel(), device=w.device, dtype=torch.int64) % 1000003 + 1
    tail = b[n:].to(torch.int64).sum()
    return f"{int(w.sum())}:{int((w * idx).sum())}:{int(tail)}:{b.numel()}"


def check_run(a: argparse.Namespace, model: Any, step: Any, outs: list[Any],
              t_start: float) -> dict[str, Any]:  # fmt: skip
    """``--check-steps``: per step the loss's bits, the output's and every gradient's
    fingerprint; at the end the parameters'. Two runs are bitwise identical iff these are."""
    import torch

    steps = []
    t0 = time.monotonic()
    for i in range(a.check_steps):
        loss = step()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        steps.append({
            "step": i,
            "loss": float(loss.detach()).hex(),
            "output": fingerprint(outs[0]),
            "grads": fingerprint(torch.cat([g.flatten().float() for g in grads])),
            "s": round(time.monotonic() - t0, 3),
        })  # fmt: skip
        if i == 0:
            print(f"lp_train: first step (compile included) {steps[0]['s']} s", file=sys.stderr)
    params = fingerprint(torch.cat([p.detach().flatten().float() for p in model.parameters()]))
    return {"check_steps": steps, "params": params, "seconds": time.monotonic() - t0,
            "startup_s": round(t0 - t_start, 2), "model": a.model, "compile": a.compile,
            "deterministic": a.deterministic, "torch": torch.__version__,
            "under_hbtui": os.environ.get("HBTUI_CLASS")}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        res = run(a)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        log("error: training failed (traceback above)")
        return 1
    tmp = f"{a.out}.tmp"
    with open(tmp, "w") as f:
        json.dump(res, f)
    os.replace(tmp, a.out)
    if a.check_steps:
        log(f"{a.check_steps} check steps in {res['seconds']:.1f} s; wrote {a.out}")
    else:
        log(f"{res['iterations']} iterations in {res['seconds']:.1f} s = {res['it_per_s']:.2f} "
            f"it/s ({res['stopped_by']}); wrote {a.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
