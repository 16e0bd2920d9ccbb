"""Train the shipped class-conditional digits diffusion model (reproducible from a seed, resumable).

Objective (DDPM, Ho et al. 2020): t ~ U{0..T-1}, eps ~ N(0, I), x_t = sqrt(acp_t) x_0 + sqrt(1 - acp_t) eps,
loss = |eps_theta(x_t, t, c) - eps|^2. Label dropout (Ho & Salimans 2022): with probability
``label_dropout`` the class c is replaced by the null class ``NULL_CLASS`` so that one network gives
both the conditional and the unconditional prediction (classifier-free guidance).

Every random draw comes from one ``torch.Generator`` whose state is checkpointed with the weights,
the optimiser and the EMA, so a resumed run continues the same sequence. Run as
``linmultistep train-digits --workdir DIR`` (``--resume`` continues from DIR's checkpoint).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import torch

from ..training import LoopConfig, train_loop, update
from .data import NUM_CLASSES, load_all, split_indices

__all__ = ["NULL_CLASS", "UNET_CONFIG", "SCHEDULER_CONFIG", "TrainConfig", "build_unet", "train"]

NULL_CLASS = NUM_CLASSES  # index of the "no class" embedding used for the unconditional branch

UNET_CONFIG = dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    layers_per_block=2,
    block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=16,
    attention_head_dim=32,
    num_class_embeds=NUM_CLASSES + 1,
)

# DDPM's pixel-space schedule; DDIM-style sampling config (the binding reads the betas from it).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=1e-4,
    beta_end=0.02,
    prediction_type="epsilon",
    clip_sample=False,
    set_alpha_to_one=True,
    steps_offset=0,
    timestep_spacing="leading",
)


class TrainConfig(LoopConfig):
    steps = 5000
    batch_size = 128
    warmup = 500  # then cosine decay to 5% (training.lr_at)
    checkpoint_every = 500
    log_every = 50
    threads = 2
    ema_decay: float = 0.999
    label_dropout: float = 0.15


def build_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(**UNET_CONFIG)


def _alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(SCHEDULER_CONFIG["beta_start"], SCHEDULER_CONFIG["beta_end"],
                           SCHEDULER_CONFIG["num_train_timesteps"], dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def train(workdir: "str | os.PathLike", cfg: TrainConfig, resume: bool = False, export: "str | os.PathLike | None" = None) -> Path:
    """Train (or resume) in ``workdir``; write the EMA model to ``export`` (default workdir/model)."""
    torch.set_num_threads(cfg.threads)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)

    images, labels = load_all()
    train_idx, held_idx = split_indices(labels)
    x_all = torch.from_numpy(images[train_idx])
    y_all = torch.from_numpy(labels[train_idx])

    torch.manual_seed(cfg.seed)  # parameter initialisation
    unet = build_unet()
    ema = build_unet()
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    acp = _alphas_cumprod().float()
    unet.train()

    def step_fn(step: int) -> dict:
        idx = torch.randint(0, len(x_all), (cfg.batch_size,), generator=gen)
        x0, y = x_all[idx], y_all[idx].clone()
        y[torch.rand(cfg.batch_size, generator=gen) < cfg.label_dropout] = NULL_CLASS
        t = torch.randint(0, acp.numel(), (cfg.batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = torch.nn.functional.mse_loss(unet(xt, t, class_labels=y).sample, eps)
        update(unet, opt, loss, step, cfg, max_grad_norm=1.0, ema=ema)
        return {"loss": loss.item()}

    info = train_loop(work / "checkpoint.pt", work / "loss.csv", cfg, {"unet": unet, "ema": ema, "opt": opt, "gen": gen},
                      step_fn, resume)

    out = Path(export) if export is not None else work / "model"
    _export(ema, out, cfg, info["seconds"], held_idx, images, labels)
    return out


def _export(ema, out: Path, cfg: TrainConfig, seconds: float, held_idx, images, labels) -> None:
    """Write the diffusers folder (model_index.json naming DDIMPipeline, unet/, scheduler/), the
    held-out split and training.json."""
    from diffusers import DDIMPipeline, DDIMScheduler
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    DDIMPipeline(unet=ema, scheduler=DDIMScheduler(**SCHEDULER_CONFIG)).save_pretrained(out, safe_serialization=True)
    save_file({"images": torch.from_numpy(images[held_idx]).contiguous(),
               "labels": torch.from_numpy(labels[held_idx]).contiguous(),
               "indices": torch.from_numpy(held_idx).contiguous()}, str(out / "heldout.safetensors"))
    info = {k: getattr(cfg, k) for k in ("seed", "steps", "batch_size", "lr", "warmup", "ema_decay", "label_dropout", "threads")}
    info.update(null_class=NULL_CLASS, train_seconds=round(seconds, 1), torch=torch.__version__, threads_used=torch.get_num_threads(),
                data="sklearn.datasets.load_digits, x = v/8 - 1", heldout_per_class=len(held_idx) // NUM_CLASSES)
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    for f in out.rglob("*"):  # safetensors writes 0600; the shipped files are for everyone to read
        if f.is_file():
            f.chmod(0o644)


def export_checkpoint(workdir: "str | os.PathLike", out: "str | os.PathLike", cfg: TrainConfig | None = None) -> Path:
    """Export the EMA weights of ``workdir/checkpoint.pt`` (e.g. of a run still going) to ``out``."""
    cfg = cfg or TrainConfig()
    ck = torch.load(Path(workdir) / "checkpoint.pt", weights_only=False)
    ema = build_unet()
    ema.load_state_dict(ck["ema"])
    images, labels = load_all()
    _, held_idx = split_indices(labels)
    cfg.steps = ck["step"]
    _export(ema, Path(out), cfg, ck["elapsed"], held_idx, images, labels)
    return Path(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig
    parser.add_argument("--workdir", required=True, help="checkpoint, loss log and (by default) the exported model")
    parser.add_argument("--export", default=None, help="model folder to write (default WORKDIR/model)")
    parser.add_argument("--resume", action="store_true", help="continue from WORKDIR/checkpoint.pt")
    parser.add_argument("--classifier-only", action="store_true",
                        help="only (re)train the digit classifier into EXPORT/classifier (about 15 s)")
    for name in ("seed", "steps", "batch_size", "warmup", "checkpoint_every", "log_every", "threads"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name), help=f"(default {getattr(d, name)})")
    for name in ("lr", "ema_decay", "label_dropout"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name), help=f"(default {getattr(d, name)})")


def run(args: argparse.Namespace) -> int:
    from .classifier import train_classifier

    cfg = TrainConfig(**{k: getattr(args, k) for k in ("seed", "steps", "batch_size", "lr", "warmup", "ema_decay",
                                                         "label_dropout", "checkpoint_every", "log_every", "threads")})
    out = Path(args.export) if args.export else Path(args.workdir) / "model"
    if not args.classifier_only:
        out = train(args.workdir, cfg, resume=args.resume, export=out)
        plot_loss(Path(args.workdir) / "loss.csv", out / "loss.png")
    info = train_classifier(out / "classifier", seed=cfg.seed, threads=cfg.threads)
    print(f"classifier: held-out accuracy {info['heldout_accuracy']:.4f}")
    print(f"model written to {out}")
    return 0


def plot_loss(log: Path, path: Path) -> Path:
    """The training loss curve (log scale) from the CSV log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(log)))
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(steps, [float(r["loss"]) for r in rows], lw=1)
    ax.set(xlabel="step", ylabel=f"loss (mean of {steps[0]} steps)", yscale="log", title="digits model: training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    raise SystemExit(run(p.parse_args()))
