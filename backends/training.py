"""What the shipped models' training commands share: a seeded, resumable loop with atomic checkpoints, the
learning-rate schedule, the EMA of the weights, a CSV loss log, and the trainer,
saver and loader of the small classifiers that measure samples (digits' classifier, mnist-sd's judge).

Used by ``digits/train.py`` + ``digits/classifier.py``, ``mnist_sd/train.py`` + ``mnist_sd/judge.py`` and
``mnist_flow/train.py``. Each keeps its own command line, stages and checkpoint file names; a checkpoint is
a ``torch.save`` dict holding, under the names the caller gives, every state of the run (weights, optimiser,
EMA, the ``torch.Generator`` every random draw comes from), plus ``step``, ``elapsed`` (seconds) and
``config``. Reading one needs only those names, ``step`` and ``elapsed``, so checkpoints written before this
module (digits' had no ``config``) resume. No random number is drawn here: a step's draws are the step
function's, in its own order, so a resumed run continues the same sequence and a rebuilt model is the same.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

__all__ = ["LoopConfig", "lr_at", "set_lr", "update", "ema_update", "save_atomic", "CsvLog", "train_loop", "config_defaults",
           "shift_batch", "fit_classifier", "save_classifier", "load_classifier_weights"]


class LoopConfig(argparse.Namespace):
    """The options of :func:`train_loop` and :func:`lr_at` with their defaults. A package's config subclasses it,
    setting its own values (``steps = 8000``) and adding its own annotated options (``ema_decay: float = 0.999``)."""

    seed: int = 0
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 0
    cosine: bool = True
    checkpoint_every: int = 250
    log_every: int = 25
    threads: int = 1


# --- the schedule and the EMA ---------------------------------------------------------------------------------
def lr_at(step: int, cfg: Any) -> float:
    """Learning rate of 0-based ``step``: linear warm-up over ``cfg.warmup`` steps to ``cfg.lr``, then cosine
    decay to 5% of it at ``cfg.steps`` (``cfg.cosine``, default True) or constant (so that a longer run extends
    a shorter one exactly)::

        lr(s) = lr (s + 1) / warmup                                            s < warmup
        lr(s) = lr (0.05 + 0.95 (1 + cos(pi p)) / 2),  p = (s - warmup) / (steps - warmup)   after, cosine
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if not getattr(cfg, "cosine", True):
        return cfg.lr
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def set_lr(opt: torch.optim.Optimizer, step: int, cfg: Any) -> None:
    """Every parameter group of ``opt`` at ``lr_at(step, cfg)``."""
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg)


def update(model: nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, step: int, cfg: Any,
           max_grad_norm: float, ema: "nn.Module | None" = None) -> None:
    """One optimiser step on ``loss`` at ``lr_at(step, cfg)``: gradients of ``model``'s parameters, their
    global norm clipped to ``max_grad_norm``, the step; then ``ema`` follows with decay ``cfg.ema_decay``."""
    set_lr(opt, step, cfg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    opt.step()
    if ema is not None:
        ema_update(ema, model, cfg.ema_decay)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Exponential moving average of the weights: theta_ema <- decay theta_ema + (1 - decay) theta."""
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1 - decay)


# --- checkpoints and logs ---------------------------------------------------------------------------------------
def save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: an interrupted write never leaves a broken checkpoint."""
    tmp = Path(path).with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class CsvLog:
    """Rows appended to a CSV file, the header written with the first (``fresh``: start a new file)."""

    def __init__(self, path: Path, fresh: bool) -> None:
        self.path = Path(path)
        if fresh and self.path.exists():
            self.path.unlink()

    def write(self, row: dict) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)


def _state_of(obj: Any) -> Any:
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def _restore(obj: Any, saved: Any) -> None:
    obj.set_state(saved) if isinstance(obj, torch.Generator) else obj.load_state_dict(saved)


def train_loop(checkpoint: Path, log_path: Path, cfg: Any, state: Mapping[str, Any],
               step_fn: Callable[[int], dict], resume: bool, tag: str = "") -> dict:
    """Run ``step_fn(step)`` for steps ``0 .. cfg.steps - 1`` (from the checkpoint's step with ``resume``).

    ``state``: names -> objects with ``state_dict`` / ``load_state_dict`` (a ``torch.Generator``: ``get_state``
    / ``set_state``), saved to ``checkpoint`` every ``cfg.checkpoint_every`` steps and at the end. ``step_fn``
    returns the step's metrics (floats); their means over ``cfg.log_every`` steps go to ``log_path`` with the
    learning rate and the seconds so far, and are printed, prefixed ``tag``. Returns {steps, seconds}.
    """
    step, elapsed = 0, 0.0
    if resume and checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=False)
        for key, obj in state.items():
            _restore(obj, saved[key])
        step, elapsed = saved["step"], saved["elapsed"]
        print(f"{tag}resumed at step {step}", flush=True)
    elif resume:
        print(f"{tag}no checkpoint at {checkpoint}; starting from step 0", flush=True)
    log = CsvLog(log_path, fresh=step == 0)
    t0 = time.time() - elapsed
    running: dict[str, list[float]] = {}
    while step < cfg.steps:
        for key, value in step_fn(step).items():
            running.setdefault(key, []).append(value)
        step += 1
        if step % cfg.log_every == 0:
            means = {k: float(np.mean(v)) for k, v in running.items()}
            log.write({"step": step, **{k: f"{m:.6f}" for k, m in means.items()}, "lr": f"{lr_at(step - 1, cfg):.3e}",
                       "seconds": f"{time.time() - t0:.1f}"})
            print(f"{tag}step {step}/{cfg.steps} " + " ".join(f"{k} {m:.5f}" for k, m in means.items())
                  + f" {time.time() - t0:.0f}s", flush=True)
            running = {}
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            saved = {key: _state_of(obj) for key, obj in state.items()}
            save_atomic({**saved, "step": step, "elapsed": time.time() - t0, "config": dict(vars(cfg))}, checkpoint)
    return {"steps": step, "seconds": round(time.time() - t0, 1)}


def config_defaults(cls: type) -> dict:
    """Every annotated option of a config class and of its bases (a :class:`LoopConfig` subclass), with the
    class's value."""
    names = [k for base in reversed(cls.__mro__) for k in getattr(base, "__annotations__", {})]
    return {k: getattr(cls, k) for k in dict.fromkeys(names)}


# --- the small classifiers that measure samples ---------------------------------------------------------------
def shift_batch(x: torch.Tensor, gen: torch.Generator, max_shift: int) -> torch.Tensor:
    """The batch shifted by one random offset in -max_shift..max_shift pixels per axis (background -1 fills)."""
    s = max_shift
    pad = torch.nn.functional.pad(x, (s, s, s, s), value=-1.0)
    dx, dy = torch.randint(0, 2 * s + 1, (2,), generator=gen).tolist()
    return pad[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]


def fit_classifier(model: nn.Module, n: int, batch_loss: Callable[[torch.Tensor], torch.Tensor], *, epochs: int,
                   batch: int, lr: float, weight_decay: float, gen: torch.Generator) -> nn.Module:
    """AdamW with a cosine schedule over ``epochs`` (stepped per epoch); each epoch a random permutation of the
    ``n`` training indices (``gen``) in batches of ``batch``, ``batch_loss(indices)`` the loss of one batch
    (its augmentation included). Returns the model in eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for k in range(0, n, batch):
            loss = batch_loss(perm[k:k + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def save_classifier(model: nn.Module, info: dict, out: "str | os.PathLike") -> Path:
    """``out/model.safetensors`` (the weights) and ``out/config.json`` (``info``), readable by everyone."""
    from safetensors.torch import save_file

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(info, indent=2) + "\n")
    for f in d.iterdir():  # safetensors writes 0600; shipped files are for everyone to read
        f.chmod(0o644)
    return d


def load_classifier_weights(model: nn.Module, path: "str | os.PathLike", what: str) -> nn.Module:
    """``model`` with the weights of ``path/model.safetensors`` (eval mode); a missing or damaged file is an
    error naming ``what`` and the file."""
    from safetensors.torch import load_file

    p = Path(path) / "model.safetensors"
    if not p.is_file():
        raise FileNotFoundError(f"no {what} weights at {p}")
    try:
        model.load_state_dict(load_file(str(p)))
    except Exception as exc:  # safetensors / torch raise several kinds for a damaged or foreign file
        raise ValueError(f"cannot load the {what} from {p}: {type(exc).__name__}: {exc}") from exc
    return model.eval()

