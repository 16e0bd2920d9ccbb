"""Train the mnist-flow model: a rectified-flow model of Stable Diffusion 3's architecture on mnist-sd's latents.

The model shares mnist-sd's data, captions and autoencoder (its weights; SD3's latent convention
z = scaling_factor * (E(x) - shift_factor) with both factors set from the data) and is trained as SD3 is
(Esser et al. 2024, "Scaling Rectified Flow Transformers", sections 2-3):

    t = sigmoid(n), n ~ N(0, 1)              (logit-normal timestep density, SD3's default)
    z_t = (1 - t) z_0 + t eps,  eps ~ N(0, I)
    loss = |v_theta(z_t, 1000 t, c) - (eps - z_0)|^2

with c the prompt embeddings exactly as ``StableDiffusion3Pipeline.encode_prompt`` makes them from two
frozen CLIP text encoders (random seeded weights, as mnist-sd's) and no T5 (its part is zeros of
``MAX_SEQUENCE_LENGTH`` tokens, which is why the model is called with ``max_sequence_length=16``), and
the empty prompt with probability ``prompt_dropout`` (classifier-free guidance). EMA weights ship.

Resumable and seeded like mnist-sd's stages (``--resume`` continues the same random sequence).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..mnist_sd.data import captions, fit_bins
from ..mnist_sd.text import TEXT_CONFIG, TEXT_SEED, build_tokenizer, vocabulary_and_merges
from ..mnist_sd.train import UnetConfig, training_data
from ..training import config_defaults, train_loop, update

__all__ = ["MAX_SEQUENCE_LENGTH", "TRANSFORMER_CONFIG", "SCHEDULER_CONFIG", "FlowConfig", "build_transformer",
           "build_text_encoders", "latent_factors", "train_flow", "add_arguments", "run", "main"]

MAX_SEQUENCE_LENGTH = 16  # the T5 slot's length (zeros: the model has no T5); pass it to the pipeline
TRANSFORMER_CONFIG = dict(
    sample_size=8, patch_size=1, in_channels=4, out_channels=4, num_layers=4, attention_head_dim=32,
    num_attention_heads=4, joint_attention_dim=128, caption_projection_dim=128, pooled_projection_dim=128,
    pos_embed_max_size=8,
)
# SD3's scheduler config (shift 3.0 as SD3-medium ships it)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)


class FlowConfig(UnetConfig):
    """mnist-sd's UNet options (lr, warm-up, constant schedule, EMA, prompt dropout) for 6000 steps."""

    steps = 6000


def build_transformer() -> Any:
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(**TRANSFORMER_CONFIG)


def build_text_encoders(vocab_size: int) -> tuple[Any, Any]:
    """Two frozen ``CLIPTextModelWithProjection`` of mnist-sd's size (seeds TEXT_SEED + 1, + 2):
    SD3 concatenates their penultimate hidden states (64 + 64 = joint width 128) and pooled projections."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    vocab, _ = vocabulary_and_merges()
    config = CLIPTextConfig(vocab_size=vocab_size, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                            pad_token_id=vocab["<|endoftext|>"], **TEXT_CONFIG)
    out = []
    for k in (1, 2):
        with torch.random.fork_rng():
            torch.manual_seed(TEXT_SEED + k)
            out.append(CLIPTextModelWithProjection(config).eval().requires_grad_(False))
    return out[0], out[1]


def latent_factors(mean: torch.Tensor, std: torch.Tensor, seed: int) -> tuple[float, float]:
    """SD3's (shift_factor, scaling_factor): the mean of sampled latents, and 1 / their std about it."""
    gen = torch.Generator().manual_seed(seed)
    z = mean + std * torch.randn(mean.shape, generator=gen)
    shift = float(z.mean())
    return shift, float(1.0 / (z - shift).std())


def assemble_pipeline(work: Path, transformer: Any, vae_dir: Path) -> Any:
    """A ``StableDiffusion3Pipeline`` of the given transformer, mnist-sd's VAE (SD3 factors) and text side."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    tok = build_tokenizer(work / "tokenizer")
    enc1, enc2 = build_text_encoders(len(tok))
    vae = AutoencoderKL.from_pretrained(str(vae_dir), local_files_only=True)
    factors = json.loads((work / "flow_latent_factors.json").read_text())
    vae.register_to_config(**factors)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG), vae=vae,
        text_encoder=enc1, tokenizer=tok, text_encoder_2=enc2, tokenizer_2=tok, text_encoder_3=None, tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def encode(pipe: Any, prompts: list[str], batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds, pooled) exactly as the pipeline computes them at sampling time."""
    embeds, pooled = [], []
    for k in range(0, len(prompts), batch):
        e, _, p, _ = pipe.encode_prompt(prompt=prompts[k:k + batch], prompt_2=None, prompt_3=None,
                                        do_classifier_free_guidance=False, max_sequence_length=MAX_SEQUENCE_LENGTH)
        embeds.append(e)
        pooled.append(p)
    return torch.cat(embeds), torch.cat(pooled)


def train_flow(workdir: "str | os.PathLike", sd_workdir: "str | os.PathLike", cfg: FlowConfig, resume: bool = False) -> Path:
    """Train on SD_WORKDIR's latents (mnist-sd's 'vae' stage); write the EMA transformer to WORKDIR/transformer."""
    from safetensors.torch import load_file

    torch.set_num_threads(cfg.threads)
    work, sd_work = Path(workdir), Path(sd_workdir)
    work.mkdir(parents=True, exist_ok=True)
    lat_path = sd_work / "latents.safetensors"
    if not lat_path.is_file():
        raise FileNotFoundError(f"no latents at {lat_path}: run mnist-sd's 'vae' stage first")
    lat = load_file(str(lat_path))
    images, labels, train_idx, _ = training_data()
    if not np.array_equal(lat["indices"].numpy(), train_idx):
        raise ValueError(f"{lat_path} was encoded from a different training split")
    mu, sd = lat["mean"], lat["std"]
    shift, scaling = latent_factors(mu, sd, cfg.seed + 5)
    (work / "flow_latent_factors.json").write_text(json.dumps({"shift_factor": shift, "scaling_factor": scaling}) + "\n")
    bins = fit_bins(images[train_idx], labels[train_idx])
    caps = captions(images[train_idx], labels[train_idx], bins)

    torch.manual_seed(cfg.seed)
    model = build_transformer()
    ema = build_transformer()
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    pipe = assemble_pipeline(work, ema, sd_work / "vae")
    cond, pooled = encode(pipe, caps)
    ucond, upooled = encode(pipe, [""])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    model.train()

    def step_fn(step: int) -> dict:
        idx = torch.randint(0, len(mu), (cfg.batch_size,), generator=gen)
        z0 = scaling * (mu[idx] + sd[idx] * torch.randn(mu[idx].shape, generator=gen) - shift)
        c, p = cond[idx].clone(), pooled[idx].clone()
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.prompt_dropout
        c[drop], p[drop] = ucond[0], upooled[0]
        t = torch.sigmoid(torch.randn(cfg.batch_size, generator=gen))
        eps = torch.randn(z0.shape, generator=gen)
        tt = t.view(-1, 1, 1, 1)
        zt = (1 - tt) * z0 + tt * eps
        v = model(hidden_states=zt, timestep=1000 * t, encoder_hidden_states=c, pooled_projections=p).sample
        loss = torch.nn.functional.mse_loss(v, eps - z0)
        update(model, opt, loss, step, cfg, max_grad_norm=1.0, ema=ema)
        return {"loss": loss.item()}

    info = train_loop(work / "flow_checkpoint.pt", work / "flow_loss.csv", cfg,
                      {"model": model, "ema": ema, "opt": opt, "gen": gen}, step_fn, resume, tag="flow ")
    out = work / "transformer"
    ema.save_pretrained(out, safe_serialization=True)
    info.update(config=dict(vars(cfg)), shift_factor=shift, scaling_factor=scaling)
    (work / "flow_training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"flow: EMA weights written to {out}", flush=True)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's options (the CLI's ``add_arguments`` / ``run`` protocol)."""
    p.add_argument("--workdir", required=True, help="checkpoints, loss log and the trained transformer")
    p.add_argument("--sd-workdir", required=True, help="mnist-sd's workdir (its VAE and encoded latents)")
    p.add_argument("--resume", action="store_true", help="continue from WORKDIR/flow_checkpoint.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=FlowConfig.steps, help=f"(default {FlowConfig.steps})")
    p.add_argument("--threads", type=int, default=1)


def run(a: argparse.Namespace) -> int:
    """Train with the options ``a`` holds."""
    for name in ("steps", "threads"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(a, name)}")
    cfg = FlowConfig(**{**config_defaults(FlowConfig), "seed": a.seed, "steps": a.steps, "threads": a.threads})
    train_flow(a.workdir, a.sd_workdir, cfg, resume=a.resume)
    return 0


def main(argv: "list[str] | None" = None) -> int:
    """``python -m linmultistep.backends.mnist_flow.train --workdir DIR --sd-workdir DIR [--resume]``."""
    p = argparse.ArgumentParser(prog="train-mnist-flow", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
