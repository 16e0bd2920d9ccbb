"""``linmultistep invert | reconstruct | edit --model LOCAL_PATH ...`` for a locally stored
diffusers model (a directory written by ``save_pretrained``; nothing is downloaded).

    linmultistep invert --model ./sd15 photo.png --prompt "a cat" --steps 50 -o cat.safetensors
    linmultistep reconstruct --model ./sd15 cat.safetensors -o cat_rec.png
    linmultistep edit --model ./sd15 photo.png --source-prompt "a cat" --target-prompt "a dog" -o dog.png
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

__all__ = ["load_pipeline", "invert_command", "reconstruct_command", "edit_command"]

DTYPES = ("float32", "float64", "float16", "bfloat16")


class ModelPathError(FileNotFoundError):
    """The --model path does not hold a locally stored diffusers model."""


def resolve_model(path: "str | os.PathLike") -> Path:
    """The folder of ``path``: a built-in model name (``digits``, shipped with the package) unless a
    file or folder of that name exists, else the path itself."""
    from ..digits import BUILTIN_MODELS

    if str(path) in BUILTIN_MODELS and not Path(path).exists():
        return BUILTIN_MODELS[str(path)]
    return Path(path)


def load_pipeline(path: "str | os.PathLike", dtype: str = "float32", device: str | None = None) -> Any:
    """A diffusers pipeline from a local directory or a built-in name (``local_files_only``: never downloads)."""
    p = resolve_model(path)
    if not p.exists():
        raise ModelPathError(f"model path not found: {p} (give a local directory written by save_pretrained; "
                             "nothing is downloaded)")
    if not (p / "model_index.json").is_file():
        raise ModelPathError(f"{p} is not a diffusers pipeline directory (no model_index.json)")
    import warnings

    import torch
    from diffusers import DiffusionPipeline

    with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype; the old name still works
        warnings.simplefilter("ignore", FutureWarning)
        import json

        cls = DiffusionPipeline
        if json.loads((p / "model_index.json").read_text()).get("_class_name") == "DigitsPipeline":
            from ..digits.pipeline import DigitsPipeline as cls  # a saved DigitsPipeline: diffusers does not know it
        pipe = cls.from_pretrained(str(p), torch_dtype=getattr(torch, dtype), local_files_only=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = pipe.to(device)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def _load(args: argparse.Namespace) -> Any:
    try:
        return load_pipeline(args.model, args.dtype, args.device)
    except ModelPathError as exc:
        raise SystemExit(f"linmultistep: error: {exc}") from None


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="local diffusers pipeline directory (save_pretrained layout), or 'digits' (the shipped model)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="network dtype (default float32)")
    parser.add_argument("--state-dtype", choices=DTYPES, default=None,
                        help="dtype of the sampler states (default: the network's); float64 makes round trips ~1e-12")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--overwrite", action="store_true", help="replace output files that already exist")


def _method_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=50, help="number of inference steps N (default 50)")
    parser.add_argument("--method", default="obelm", choices=["obelm", "bdia", "edict", "ddim"])
    parser.add_argument("--gamma", type=float, default=None, help="BDIA gamma (default 1.0)")
    parser.add_argument("--p", type=float, default=None, help="EDICT mixing weight p (default 0.93)")
    parser.add_argument("--resize", choices=["down", "up", "nearest"], default=None,
                        help="resize images whose size the VAE cannot take (default: error)")
    parser.add_argument("--mode", choices=["recurrence", "stable", "bits"], default=None,
                        help="form of the steps (default: 'stable' for obelm and bdia with gamma 1, else 'recurrence'; "
                             "'bits' round-trips to the last bit, see docs/precision.md)")
    parser.add_argument("--eps-bound", type=float, default=None,
                        help="mode bits: bound on |eps| (default 64; raise it for large guidance scales)")
    parser.add_argument("--data-bound", type=float, default=None, help="mode bits: bound on |x| (default 64)")


def _mode(args: argparse.Namespace) -> dict:
    """mode= and mode_options= for invert/edit."""
    options = {k: v for k, v in (("eps_bound", args.eps_bound), ("data_bound", args.data_bound)) if v is not None}
    if options and args.mode != "bits":
        raise SystemExit("--eps-bound / --data-bound apply to --mode bits only")
    return {"mode": args.mode, "mode_options": options or None}


def _method(args: argparse.Namespace) -> Any:
    from linmultistep import get_method

    params = {}
    if args.gamma is not None:
        if args.method != "bdia":
            raise SystemExit("--gamma applies to --method bdia only")
        params["gamma"] = args.gamma
    if args.p is not None:
        if args.method != "edict":
            raise SystemExit("--p applies to --method edict only")
        params["p"] = args.p
    return get_method(args.method, **params)


def _dtype(name: str | None) -> Any:
    import torch

    return None if name is None else getattr(torch, name)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _output_paths(output: str, count: int) -> list[Path]:
    out = Path(output)
    return [out] if count == 1 else [out.with_name(f"{out.stem}_{k}{out.suffix}") for k in range(count)]


def _check_outputs(output: str, count: int, inputs: list, suffixes: tuple, overwrite: bool) -> None:
    """Before any work: the output has a suffix we can write, is none of the inputs, and (unless
    --overwrite) replaces nothing. A latent written over its own image would destroy the input."""
    paths = _output_paths(output, count)
    if Path(output).suffix.lower() not in suffixes:
        raise SystemExit(f"linmultistep: error: -o/--output {output!r} must end with {' or '.join(suffixes)}")
    given = {Path(i).resolve() for i in inputs}
    for p in paths:
        if p.resolve() in given:
            raise SystemExit(f"linmultistep: error: -o/--output {p} is one of the inputs; refusing to write over it")
        if p.exists() and not overwrite:
            raise SystemExit(f"linmultistep: error: {p} exists; pass --overwrite to replace it")


def _save_images(images: list, output: str, count: int) -> list[Path]:
    paths = _output_paths(output, count)
    for img, p in zip(images, paths):
        p.parent.mkdir(parents=True, exist_ok=True)
        img.save(p)
    return paths


# --- invert ---------------------------------------------------------------------------------
def invert_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    _method_args(parser)
    parser.add_argument("images", nargs="+", help="image files (any PIL mode; alpha composited on white)")
    parser.add_argument("--prompt", default="", help="prompt used for the inversion")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--guidance-scale", type=float, default=1.0)
    parser.add_argument("-o", "--output", required=True, help="latent file to write (.safetensors)")


def invert_command(args: argparse.Namespace) -> int:
    from . import invert
    from .latents import save_latent

    _check_outputs(args.output, 1, list(args.images), (".safetensors",), args.overwrite)
    pipe = _load(args)
    latent = invert(pipe, list(args.images), args.prompt, num_steps=args.steps, method=_method(args),
                    guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt,
                    state_dtype=_dtype(args.state_dtype), resize=args.resize, progress=not args.quiet, **_mode(args))
    latent = type(latent)(latent.window, latent.method, latent.fingerprint, latent.mode, latent.nfe,
                          {**latent.metadata, "model": str(resolve_model(args.model).resolve()),
                           "images": [str(p) for p in args.images]})
    path = save_latent(latent, args.output)
    print(f"wrote {path} ({latent.method}, mode {latent.mode}, {args.steps} steps, {latent.nfe} network evaluations)")
    return 0


# --- reconstruct ----------------------------------------------------------------------------
def reconstruct_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("latent", help="latent file written by 'linmultistep invert'")
    parser.add_argument("--prompt", default=None, help="override the recorded prompt (an edit, not a reconstruction)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="override the recorded guidance scale")
    parser.add_argument("--ignore-model-mismatch", action="store_true",
                        help="sample a latent inverted with another model's weights anyway (not a reconstruction)")
    parser.add_argument("-o", "--output", required=True, help="image file to write (index appended for batches)")


def reconstruct_command(args: argparse.Namespace) -> int:
    from . import reconstruct
    from .latents import load_latent, _read_batch

    _check_outputs(args.output, _read_batch(args.latent), [args.latent], IMAGE_SUFFIXES, args.overwrite)
    pipe = _load(args)
    latent = load_latent(args.latent, device=pipe.unet.device)
    if args.state_dtype is not None:
        dt = _dtype(args.state_dtype)
        if latent.mode.startswith("bits"):
            raise SystemExit("--state-dtype does not apply to a latent of mode bits: its state is int64 fixed point "
                             "and the network must see the inversion's inputs")

        def cast(t: Any) -> Any:  # absent parts stay absent
            return t if t is None else t.to(dt)

        latent = type(latent)({i: ((e._make(map(cast, e)) if hasattr(e, "_make") else tuple(map(cast, e)))
                                   if isinstance(e, tuple) else e.to(dt))
                               for i, e in latent.window.items()},
                              latent.method, latent.fingerprint, latent.mode, latent.nfe, latent.metadata)
    from linmultistep import LatentMismatchError

    try:
        images = reconstruct(pipe, latent, args.prompt, guidance_scale=args.guidance_scale, output_type="pil",
                             progress=not args.quiet, check_model=not args.ignore_model_mismatch)
    except LatentMismatchError as exc:
        raise SystemExit(f"linmultistep: error: {exc}".replace("pass check_model=False", "pass --ignore-model-mismatch"))
    for p in _save_images(images, args.output, len(images)):
        print(f"wrote {p}")
    return 0


# --- edit -----------------------------------------------------------------------------------
def edit_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    _method_args(parser)
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--source-prompt", required=True)
    parser.add_argument("--target-prompt", required=True)
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--strength", type=float, default=1.0, help="fraction of the steps re-sampled (0, 1]")
    parser.add_argument("--freeze-last", type=int, default=0, help="last steps sampled with the source prompt")
    parser.add_argument("--guidance-scale", type=float, default=7.5, help="guidance of the target branch")
    parser.add_argument("--source-guidance-scale", type=float, default=1.0, help="guidance of the inversion")
    parser.add_argument("--no-direct-inversion", action="store_true",
                        help="plain edit: no pinned source branch, no self-attention sharing")
    parser.add_argument("--self-attention-steps", type=float, default=0.4,
                        help="fraction of the (noise-most) steps with source self-attention maps")
    parser.add_argument("-o", "--output", required=True, help="image file to write (index appended for batches)")


def edit_command(args: argparse.Namespace) -> int:
    from . import edit

    _check_outputs(args.output, len(args.images), list(args.images), IMAGE_SUFFIXES, args.overwrite)
    pipe = _load(args)
    images = edit(pipe, list(args.images), args.source_prompt, args.target_prompt, num_steps=args.steps,
                  method=_method(args), strength=args.strength, freeze_last=args.freeze_last,
                  source_guidance_scale=args.source_guidance_scale, guidance_scale=args.guidance_scale,
                  negative_prompt=args.negative_prompt, direct_inversion=not args.no_direct_inversion,
                  self_attention_steps=args.self_attention_steps, state_dtype=_dtype(args.state_dtype),
                  resize=args.resize, output_type="pil", progress=not args.quiet, **_mode(args))
    for p in _save_images(images, args.output, len(images)):
        print(f"wrote {p}")
    return 0
