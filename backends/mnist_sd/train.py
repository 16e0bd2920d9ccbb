"""Train the mnist-sd model, stage by stage, reproducibly from a seed and resumably.

Stages (``--stage``, default ``all`` runs them in this order):

1. ``vae``: ``AutoencoderKL`` 32x32x1 -> 8x8x4 on the training split. Loss per image (sums over pixels /
   latent entries, as in the latent-diffusion autoencoder of Rombach et al. 2022):
   |x - D(z)|^2 + |x - D(z)|_1 + beta KL(q(z|x) || N(0, I)), z ~ q(z|x), beta = ``kl_weight``.
   Then the training split is encoded once (posterior mean and std of every image, ``latents.safetensors``)
   and ``scaling_factor`` = 1 / std(z) over sampled latents z, as SD sets 0.18215.
2. ``unet``: ``UNet2DConditionModel`` on scaled latents with SD's noise schedule (scaled_linear,
   beta 0.00085..0.012, 1000 steps) and the DDPM objective (Ho et al. 2020)
   t ~ U{0..999}, eps ~ N(0, I), z_t = sqrt(acp_t) z_0 + sqrt(1 - acp_t) eps, loss = |eps_theta(z_t, t, c) - eps|^2,
   with c the frozen text encoder's last hidden states of the caption, replaced by those of the empty
   prompt with probability ``prompt_dropout`` (classifier-free guidance, Ho & Salimans 2022). EMA weights
   are what ships. z_0 = scaling_factor * (mu + sigma n), n ~ N(0, I) drawn afresh every step.
3. ``judge``: the independent classifier (``judge.py``), trained on the held-out split only.
4. ``build``: the diffusers folder (``build.py``) from the VAE, the UNet's EMA, the text encoder and the judge.

Every random draw of a stage comes from one ``torch.Generator`` whose state is checkpointed with the
weights, the optimiser (and the EMA), so ``--resume`` continues the same sequence. Checkpoints are written
atomically every ``--checkpoint-every`` steps into WORKDIR.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..training import LoopConfig, config_defaults, train_loop, update
from .data import captions, fit_bins, load_all, split_indices

__all__ = ["VAE_CONFIG", "UNET_CONFIG", "SCHEDULER_CONFIG", "VaeConfig", "UnetConfig", "build_vae", "build_unet",
           "alphas_cumprod", "training_data", "train_vae", "encode_latents", "train_unet", "add_arguments", "run", "main"]

VAE_CONFIG = dict(
    in_channels=1,
    out_channels=1,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=32,
)

UNET_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=64,  # the text encoder's hidden size
    attention_head_dim=8,
    norm_num_groups=32,
)

# Stable Diffusion v1's scheduler config (DDIMScheduler as in its model folders)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
)


class VaeConfig(LoopConfig):
    steps = 1200
    batch_size = 32
    warmup = 200
    checkpoint_every = 200
    kl_weight: float = 1e-4


class UnetConfig(LoopConfig):
    steps = 8000
    lr = 5e-4
    warmup = 300
    cosine = False  # constant after warm-up: a longer run (--resume --unet-steps M) extends a shorter one exactly
    ema_decay: float = 0.999
    prompt_dropout: float = 0.1


def build_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG)


def build_unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def alphas_cumprod() -> torch.Tensor:
    """SD's scaled_linear schedule: beta_i = (sqrt(0.00085) + i/999 (sqrt(0.012) - sqrt(0.00085)))^2 (float64)."""
    c = SCHEDULER_CONFIG
    betas = torch.linspace(c["beta_start"] ** 0.5, c["beta_end"] ** 0.5, c["num_train_timesteps"], dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def training_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images, labels = load_all()
    train_idx, held_idx = split_indices(labels)
    return images, labels, train_idx, held_idx


def _loop(name: str, work: Path, cfg: Any, state: dict, step_fn: Callable[[int], dict], resume: bool) -> dict:
    """The shared loop (``training.train_loop``) on WORKDIR/<name>_checkpoint.pt and WORKDIR/<name>_loss.csv."""
    return train_loop(work / f"{name}_checkpoint.pt", work / f"{name}_loss.csv", cfg, state, step_fn, resume, tag=f"{name} ")


# ---------------------------------------------------------------- stage 1: the autoencoder
def train_vae(workdir: "str | os.PathLike", cfg: VaeConfig, resume: bool = False) -> Path:
    """Train the autoencoder; write WORKDIR/vae (diffusers folder, scaling_factor set) and latents."""
    torch.set_num_threads(cfg.threads)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    images, labels, train_idx, held_idx = training_data()
    x_all = torch.from_numpy(images[train_idx])

    torch.manual_seed(cfg.seed)  # parameter initialisation
    vae = build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    vae.train()

    def step_fn(step: int) -> dict:
        idx = torch.randint(0, len(x_all), (cfg.batch_size,), generator=gen)
        x = x_all[idx]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        err = rec - x
        l2 = err.pow(2).flatten(1).sum(1).mean()
        l1 = err.abs().flatten(1).sum(1).mean()
        kl = post.kl().mean()  # diffusers sums over latent entries per image
        loss = l2 + l1 + cfg.kl_weight * kl
        update(vae, opt, loss, step, cfg, max_grad_norm=10.0)
        n = x[0].numel()
        return {"mse": l2.item() / n, "l1": l1.item() / n, "kl": kl.item()}

    info = _loop("vae", work, cfg, {"vae": vae, "opt": opt, "gen": gen}, step_fn, resume)
    vae.eval()
    out = work / "vae"
    scaling, floor = encode_latents(vae, images, train_idx, held_idx, work / "latents.safetensors", seed=cfg.seed + 2)
    vae.register_to_config(scaling_factor=scaling)
    vae.save_pretrained(out, safe_serialization=True)
    info.update(scaling_factor=scaling, **floor, config={k: v for k, v in vars(cfg).items()})
    (work / "vae_training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"vae: scaling_factor {scaling:.5f}, reconstruction MSE train {floor['train_mse']:.5f} held-out {floor['heldout_mse']:.5f}", flush=True)
    return out


@torch.no_grad()
def encode_latents(vae: Any, images: np.ndarray, train_idx: np.ndarray, held_idx: np.ndarray, path: Path,
                   seed: int = 2, batch: int = 250) -> tuple[float, dict]:
    """Posterior mean/std of the training split -> ``path``; returns (scaling_factor, reconstruction MSEs).

    scaling_factor = 1 / std(z), z sampled from the posteriors (SD's recipe for its 0.18215). The
    reconstruction MSE (mean over pixels in [-1, 1] units) of D(mean(q(z|x))) is the pixel floor.
    """
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(images)
    means, stds, sq = [], [], {}
    for name, idx in (("train", train_idx), ("heldout", held_idx)):
        total = 0.0
        for k in range(0, len(idx), batch):
            xb = x[idx[k:k + batch]]
            post = vae.encode(xb).latent_dist
            total += (vae.decode(post.mean).sample - xb).pow(2).sum().item()
            if name == "train":
                means.append(post.mean)
                stds.append(post.std)
        sq[f"{name}_mse"] = total / (len(idx) * x[0].numel())
    mean, std = torch.cat(means), torch.cat(stds)
    z = mean + std * torch.randn(mean.shape, generator=gen)
    scaling = float(1.0 / z.std())
    save_file({"mean": mean.contiguous(), "std": std.contiguous(), "indices": torch.from_numpy(train_idx).contiguous()}, str(path))
    return scaling, sq


# ---------------------------------------------------------------- stage 2: the UNet
def _text_side(work: Path) -> tuple[Any, Any]:
    from .text import build_text_encoder, build_tokenizer

    tok = build_tokenizer(work / "tokenizer")
    return tok, build_text_encoder(len(tok))


@torch.no_grad()
def encode_prompts(tokenizer: Any, text_encoder: Any, prompts: list[str], batch: int = 500) -> torch.Tensor:
    """Last hidden states (N, MAX_LENGTH, hidden) of the prompts, padded as SD's pipeline pads them."""
    out = []
    for k in range(0, len(prompts), batch):
        ids = tokenizer(prompts[k:k + batch], padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        out.append(text_encoder(ids)[0])
    return torch.cat(out)


def train_unet(workdir: "str | os.PathLike", cfg: UnetConfig, resume: bool = False) -> Path:
    """Train the UNet on WORKDIR/latents.safetensors; write the EMA UNet to WORKDIR/unet."""
    from safetensors.torch import load_file

    torch.set_num_threads(cfg.threads)
    work = Path(workdir)
    lat_path = work / "latents.safetensors"
    if not lat_path.is_file():
        raise FileNotFoundError(f"no latents at {lat_path}: run the 'vae' stage first")
    lat = load_file(str(lat_path))
    vae_cfg = json.loads((work / "vae" / "config.json").read_text())
    scaling = float(vae_cfg["scaling_factor"])
    images, labels, train_idx, held_idx = training_data()
    if not np.array_equal(lat["indices"].numpy(), train_idx):
        raise ValueError(f"{lat_path} was encoded from a different training split; rerun the 'vae' stage")
    bins = fit_bins(images[train_idx], labels[train_idx])
    (work / "attributes.json").write_text(bins.to_json())
    caps = captions(images[train_idx], labels[train_idx], bins)
    tok, enc = _text_side(work)
    cond = encode_prompts(tok, enc, caps)
    uncond = encode_prompts(tok, enc, [""])[0]
    mu, sd = lat["mean"], lat["std"]

    torch.manual_seed(cfg.seed)
    unet = build_unet()
    ema = build_unet()
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    acp = alphas_cumprod().float()
    unet.train()

    def step_fn(step: int) -> dict:
        idx = torch.randint(0, len(mu), (cfg.batch_size,), generator=gen)
        z0 = scaling * (mu[idx] + sd[idx] * torch.randn(mu[idx].shape, generator=gen))
        c = cond[idx].clone()
        c[torch.rand(cfg.batch_size, generator=gen) < cfg.prompt_dropout] = uncond
        t = torch.randint(0, acp.numel(), (cfg.batch_size,), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        loss = torch.nn.functional.mse_loss(unet(zt, t, encoder_hidden_states=c).sample, eps)
        update(unet, opt, loss, step, cfg, max_grad_norm=1.0, ema=ema)
        return {"loss": loss.item()}

    info = _loop("unet", work, cfg, {"unet": unet, "ema": ema, "opt": opt, "gen": gen}, step_fn, resume)
    out = work / "unet"
    ema.save_pretrained(out, safe_serialization=True)
    info.update(config={k: v for k, v in vars(cfg).items()}, scaling_factor=scaling)
    (work / "unet_training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"unet: EMA weights written to {out}", flush=True)
    return out


def export_unet_checkpoint(workdir: "str | os.PathLike") -> Path:
    """Write the EMA weights of WORKDIR/unet_checkpoint.pt (e.g. of a run still going) to WORKDIR/unet."""
    work = Path(workdir)
    ck = torch.load(work / "unet_checkpoint.pt", weights_only=False)
    ema = build_unet()
    ema.load_state_dict(ck["ema"])
    ema.save_pretrained(work / "unet", safe_serialization=True)
    info = {"steps": ck["step"], "seconds": round(ck["elapsed"], 1), "config": ck.get("config", {}), "partial": True}
    (work / "unet_training.json").write_text(json.dumps(info, indent=2) + "\n")
    return work / "unet"


# ---------------------------------------------------------------- command line
STAGES = ("vae", "unet", "judge", "build")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="checkpoints, loss logs and stage outputs")
    parser.add_argument("--stage", choices=("all",) + STAGES, default="all", help="which stage to run (default all, in order)")
    parser.add_argument("--resume", action="store_true", help="continue a stage from WORKDIR/<stage>_checkpoint.pt")
    parser.add_argument("--export", default=None, help="model folder the 'build' stage writes (default WORKDIR/model)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--vae-steps", type=int, default=VaeConfig.steps, help=f"(default {VaeConfig.steps})")
    parser.add_argument("--unet-steps", type=int, default=UnetConfig.steps, help=f"(default {UnetConfig.steps})")
    parser.add_argument("--vae-batch-size", type=int, default=VaeConfig.batch_size, help=f"(default {VaeConfig.batch_size})")
    parser.add_argument("--unet-batch-size", type=int, default=UnetConfig.batch_size, help=f"(default {UnetConfig.batch_size})")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default: per stage)")
    parser.add_argument("--from-checkpoint", action="store_true",
                        help="build: take the UNet's EMA from its latest checkpoint (a run still going)")


def main(argv: "list[str] | None" = None) -> int:
    """``python -m linmultistep.backends.mnist_sd.train --workdir DIR [--stage S] [--resume] [--seed N]``."""
    p = argparse.ArgumentParser(prog="train-mnist-sd", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the stages ``args`` name (the CLI's ``add_arguments`` / ``run`` protocol)."""
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    for name in ("vae_steps", "unet_steps", "vae_batch_size", "unet_batch_size", "checkpoint_every"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    work = Path(args.workdir)
    stages = STAGES if args.stage == "all" else (args.stage,)
    for stage in stages:
        if stage == "vae":
            cfg = VaeConfig(**{**config_defaults(VaeConfig), "seed": args.seed, "steps": args.vae_steps, "batch_size": args.vae_batch_size,
                               "threads": args.threads})
            cfg = _with_checkpoint_every(cfg, args)
            train_vae(work, cfg, resume=args.resume)
        elif stage == "unet":
            cfg = UnetConfig(**{**config_defaults(UnetConfig), "seed": args.seed, "steps": args.unet_steps, "batch_size": args.unet_batch_size,
                                "threads": args.threads})
            cfg = _with_checkpoint_every(cfg, args)
            train_unet(work, cfg, resume=args.resume)
        elif stage == "judge":
            from .judge import train_judge

            info = train_judge(work / "judge", seed=args.seed, threads=args.threads)
            print("judge: " + json.dumps(info), flush=True)
        elif stage == "build":
            from .build import build_from_workdir

            if args.from_checkpoint:
                export_unet_checkpoint(work)
            out = build_from_workdir(work, Path(args.export) if args.export else work / "model")
            print(f"model written to {out}", flush=True)
    return 0


def _with_checkpoint_every(cfg: Any, args: argparse.Namespace) -> Any:
    if args.checkpoint_every is not None:
        cfg.checkpoint_every = args.checkpoint_every
    return cfg


if __name__ == "__main__":
    raise SystemExit(main())
