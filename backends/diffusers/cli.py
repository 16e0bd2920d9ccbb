"""``linmultistep invert | reconstruct | edit | generate --model LOCAL_PATH ...`` for a locally
stored diffusers model (a directory written by ``save_pretrained``, or ``digits``, the model shipped
with the package; nothing is downloaded).

    linmultistep invert --model ./sd15 photo.png --prompt "a cat" --steps 50 -o cat.safetensors
    linmultistep reconstruct --model ./sd15 cat.safetensors -o cat_rec.png
    linmultistep edit --model ./sd15 photo.png --source-prompt "a cat" --target-prompt "a dog" -o dog.png
    linmultistep generate --model digits --prompt 3 --count 4 --seed 0 -o threes.png

Everything the user gave is checked before the model is loaded (options, input files, output
paths); a bad value ends in one line naming the option and exit code 2 (see
:func:`linmultistep.cli.main`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .arguments import check_edit_numbers, check_finite

__all__ = ["load_pipeline", "invert_command", "reconstruct_command", "edit_command", "generate_command", "UsageError"]

DTYPES = ("float32", "float64", "float16", "bfloat16")
METHODS = ("obelm", "bdia", "edict", "ddim")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_STEPS = 10_000  # more than any schedule gives distinct timesteps for (1000 for Stable Diffusion)


class UsageError(ValueError):
    """A command-line value that cannot work; reported as one line with exit code 2."""


class ModelPathError(UsageError, FileNotFoundError):
    """The --model path does not hold a locally stored diffusers model."""


def resolve_model(path: "str | os.PathLike") -> Path:
    """The folder of ``path``: a built-in model name (``digits``, shipped with the package) unless a
    file or folder of that name exists, else the path itself."""
    from ..digits import BUILTIN_MODELS

    if str(path) in BUILTIN_MODELS and not Path(path).exists():
        return BUILTIN_MODELS[str(path)]
    return Path(path)


def check_model_path(path: "str | os.PathLike") -> Path:
    """The model folder, or a :class:`ModelPathError` naming what is missing (no import of torch)."""
    p = resolve_model(path)
    if not p.exists():
        raise ModelPathError(f"model path not found: {p} (give a local directory written by save_pretrained; "
                             "nothing is downloaded)")
    if not (p / "model_index.json").is_file():
        raise ModelPathError(f"{p} is not a diffusers pipeline directory (no model_index.json)")
    return p


def load_pipeline(path: "str | os.PathLike", dtype: str = "float32", device: str | None = None) -> Any:
    """A diffusers pipeline from a local directory or a built-in name (``local_files_only``: never downloads)."""
    p = check_model_path(path)
    import json
    import warnings

    import torch
    from diffusers import DiffusionPipeline

    with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype; the old name still works
        warnings.simplefilter("ignore", FutureWarning)
        cls = DiffusionPipeline
        if json.loads((p / "model_index.json").read_text()).get("_class_name") == "DigitsPipeline":
            from ..digits.pipeline import DigitsPipeline as cls  # a saved DigitsPipeline: diffusers does not know it
        pipe = cls.from_pretrained(str(p), torch_dtype=getattr(torch, dtype), local_files_only=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = pipe.to(device)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)  # the commands pass progress= themselves (--quiet)
    return pipe


# --- options ----------------------------------------------------------------------------------
def _common(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("--model", required=True,
                        help="local diffusers pipeline directory (save_pretrained layout), or 'digits' (the shipped model)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="network dtype")
    parser.add_argument("--state-dtype", choices=DTYPES, default=None,
                        help="dtype of the sampler states (None: the network's); float64 makes round trips ~1e-12")
    parser.add_argument("--device", default=None, help="torch device (None: cuda if available, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or loading messages")
    parser.add_argument("--overwrite", action="store_true", help="replace output files that already exist")


def _method_args(parser: argparse.ArgumentParser) -> None:
    from linmultistep.modes import mode_names

    parser.add_argument("--steps", type=int, default=50, help="number of inference steps N")
    parser.add_argument("--method", default="obelm", choices=METHODS, help="sampler")
    parser.add_argument("--gamma", type=float, default=None, help="BDIA gamma (None: 1.0)")
    parser.add_argument("--p", type=float, default=None, help="EDICT mixing weight p (None: 0.93)")
    parser.add_argument("--mode", choices=mode_names(), default=None,
                        help="form of the steps (None: 'stable' for obelm and bdia with gamma 1, else 'recurrence'; "
                             "'bits' round-trips to the last bit, see docs/precision.md)")
    parser.add_argument("--eps-bound", type=float, default=None,
                        help="mode bits: bound on |eps| (None: 64; raise it for large guidance scales)")
    parser.add_argument("--data-bound", type=float, default=None, help="mode bits: bound on |x| (None: 64)")


def _image_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resize", choices=["down", "up", "nearest"], default=None,
                        help="resize images whose size the model cannot take (None: error); outputs get the original size")


def _positive_steps(steps: int) -> None:
    if not 1 <= steps <= MAX_STEPS:
        raise UsageError(f"--steps must be between 1 and {MAX_STEPS}, got {steps}")


def _mode_options(args: argparse.Namespace) -> dict | None:
    options = {k: v for k, v in (("eps_bound", args.eps_bound), ("data_bound", args.data_bound)) if v is not None}
    if options and args.mode != "bits":
        raise UsageError("--eps-bound / --data-bound apply to --mode bits only")
    return options or None


def _mode(args: argparse.Namespace) -> dict:
    """mode= and mode_options= for invert/edit/generate (checked by :func:`_method`)."""
    return {"mode": args.mode, "mode_options": _mode_options(args)}


def _method(args: argparse.Namespace) -> Any:
    """The method object (its own checks run here, before the model loads)."""
    from linmultistep import get_method

    params = {}
    if args.gamma is not None:
        if args.method != "bdia":
            raise UsageError("--gamma applies to --method bdia only")
        params["gamma"] = args.gamma
    if args.p is not None:
        if args.method != "edict":
            raise UsageError("--p applies to --method edict only")
        params["p"] = args.p
    _positive_steps(args.steps)
    method = get_method(args.method, **params)
    from linmultistep import resolve_mode

    # the mode's own checks: e.g. 'stable' for a method that has no stable form, eps_bound <= 0
    resolve_mode(method, args.mode, options=_mode_options(args))
    return method


def _dtype(name: str | None) -> Any:
    import torch

    return None if name is None else getattr(torch, name)


# --- files ------------------------------------------------------------------------------------
def _output_paths(output: str, count: int) -> list[Path]:
    out = Path(output)
    return [out] if count == 1 else [out.with_name(f"{out.stem}_{k}{out.suffix}") for k in range(count)]


def _check_outputs(output: str, count: int, inputs: list, suffixes: tuple, overwrite: bool,
                   option: str = "-o/--output") -> None:
    """Before any work: the output has a suffix we can write, is none of the inputs, and (unless
    --overwrite) replaces nothing. A latent written over its own image would destroy the input."""
    if Path(output).suffix.lower() not in suffixes:
        raise UsageError(f"{option} {output!r} must end with {' or '.join(suffixes)}")
    given = {Path(i).resolve() for i in inputs}
    for p in _output_paths(output, count):
        if p.resolve() in given:
            raise UsageError(f"{option} {p} is one of the inputs; refusing to write over it")
        if p.exists() and not overwrite:
            raise UsageError(f"{p} exists; pass --overwrite to replace it")
        if p.exists() and p.is_dir():
            raise UsageError(f"{option} {p} is a directory")


def _read_inputs(paths: list) -> list:
    """Every input image opened (upright, size-checked) before the model loads: a bad file is named
    before minutes of loading, and nothing is read twice."""
    from .images import load_image

    return [load_image(p) for p in paths]


def _save_images(images: list, output: str, count: int) -> list[Path]:
    from .latents import write_atomic
    import io

    paths = _output_paths(output, count)
    for img, p in zip(images, paths):
        p.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        img.save(buf, format=_pil_format(p))
        write_atomic(p, buf.getvalue())  # an interrupted run leaves no half-written image
    return paths


def _pil_format(path: Path) -> str:
    from PIL import Image

    Image.init()
    return Image.EXTENSION[path.suffix.lower()]


def _load(args: argparse.Namespace) -> Any:
    return load_pipeline(args.model, args.dtype, args.device)


def _labelled(latent: Any, args: argparse.Namespace, images: list) -> Any:
    """The latent with the model folder and input files recorded (the Python API records what it knows)."""
    import dataclasses

    return dataclasses.replace(latent, metadata={**latent.metadata, "model": str(resolve_model(args.model).resolve()),
                                                 "images": [str(p) for p in images]})


# --- invert ---------------------------------------------------------------------------------
def invert_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    _method_args(parser)
    _image_args(parser)
    parser.add_argument("images", nargs="+", help="image files (any PIL mode; alpha composited on white)")
    parser.add_argument("--prompt", default="", help="prompt (or class label) used for the inversion")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance of the inversion")
    parser.add_argument("-o", "--output", required=True, help="latent file to write (.safetensors)")


def invert_command(args: argparse.Namespace) -> int:
    from . import invert
    from .latents import save_latent

    _check_outputs(args.output, 1, list(args.images), (".safetensors",), args.overwrite)
    method, mode = _method(args), _mode(args)
    check_finite(guidance_scale=args.guidance_scale)
    check_model_path(args.model)
    images = _read_inputs(args.images)
    pipe = _load(args)
    latent = invert(pipe, images, args.prompt, num_steps=args.steps, method=method,
                    guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt,
                    state_dtype=_dtype(args.state_dtype), resize=args.resize, progress=not args.quiet, **mode)
    path = save_latent(_labelled(latent, args, args.images), args.output)
    print(f"wrote {path} ({latent.method}, mode {latent.mode}, {args.steps} steps, {latent.nfe} network evaluations)")
    return 0


# --- reconstruct ----------------------------------------------------------------------------
def reconstruct_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("latent", help="latent file written by 'linmultistep invert' (or edit --save-latent)")
    parser.add_argument("--prompt", default=None, help="override the recorded prompt (an edit, not a reconstruction)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="override the recorded guidance scale (None: the recorded one)")
    parser.add_argument("--ignore-model-mismatch", action="store_true",
                        help="sample a latent inverted with another model's weights anyway (not a reconstruction)")
    parser.add_argument("--no-restore-size", action="store_true",
                        help="keep the model's size for images resized at inversion (--resize)")
    parser.add_argument("-o", "--output", required=True, help="image file to write (index appended for batches)")


def _convert(latent: Any, dtype_name: str | None = None, device: Any = None) -> Any:
    """The latent's arrays in another float dtype (--state-dtype) and/or on the model's device (absent
    parts stay absent); the saved file is unchanged."""
    if dtype_name is not None and latent.mode.startswith("bits"):
        raise UsageError("--state-dtype does not apply to a latent of mode bits: its state is int64 fixed point "
                         "and the network must see the inversion's inputs")
    if dtype_name is None and device is None:
        return latent
    import dataclasses

    dt = _dtype(dtype_name)

    def convert(t: Any) -> Any:
        if t is None:
            return None
        return t.to(device=device if device is not None else t.device, dtype=dt if dt is not None else t.dtype)

    window = {i: type(e)(*map(convert, e)) for i, e in latent.window.items()}
    return dataclasses.replace(latent, window=window)


def reconstruct_command(args: argparse.Namespace) -> int:
    from . import reconstruct
    from .latents import load_latent

    if args.guidance_scale is not None:  # None: the latent's own
        check_finite(guidance_scale=args.guidance_scale)
    latent = load_latent(args.latent)  # checked (integrity digest, fields) before the model loads
    latent = _convert(latent, args.state_dtype)
    _check_outputs(args.output, int(latent.x.shape[0]), [args.latent], IMAGE_SUFFIXES, args.overwrite)
    check_model_path(args.model)
    pipe = _load(args)
    latent = _convert(latent, device=pipe.unet.device)  # the states live where the network runs
    images = reconstruct(pipe, latent, args.prompt, guidance_scale=args.guidance_scale, output_type="pil",
                         progress=not args.quiet, check_model=not args.ignore_model_mismatch,
                         restore_size=not args.no_restore_size).images
    for p in _save_images(images, args.output, len(images)):
        print(f"wrote {p}")
    return 0


# --- edit -----------------------------------------------------------------------------------
def edit_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    _method_args(parser)
    _image_args(parser)
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--source-prompt", required=True, help="what the images show (text, or a class label)")
    parser.add_argument("--target-prompt", required=True, nargs="+",
                        help="what they should show; several: every image edited to each, in one batch "
                             "(outputs numbered target by target)")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--strength", type=float, default=1.0, help="fraction of the steps re-sampled, in (0, 1]")
    parser.add_argument("--freeze-last", type=int, default=0, help="last steps sampled with the source prompt")
    parser.add_argument("--guidance-scale", type=float, default=7.5, help="guidance of the target branch")
    parser.add_argument("--source-guidance-scale", type=float, default=1.0, help="guidance of the inversion")
    parser.add_argument("--no-direct-inversion", action="store_true",
                        help="plain edit: no pinned source branch, no self-attention sharing")
    parser.add_argument("--self-attention-steps", type=float, default=0.4,
                        help="fraction of the (noise-most) steps with source self-attention maps, in [0, 1]")
    parser.add_argument("--save-latent", default=None, metavar="FILE.safetensors",
                        help="also write the exact latent of the source images (reconstruct gives them back)")
    parser.add_argument("-o", "--output", required=True, help="image file to write (index appended for batches)")


def edit_command(args: argparse.Namespace) -> int:
    from . import edit
    from .latents import save_latent

    n, targets = len(args.images), list(args.target_prompt)
    count = n * len(targets)
    _check_outputs(args.output, count, list(args.images), IMAGE_SUFFIXES, args.overwrite)
    if args.save_latent is not None:
        _check_outputs(args.save_latent, 1, list(args.images) + _output_paths(args.output, count),
                       (".safetensors",), args.overwrite, option="--save-latent")
    method, mode = _method(args), _mode(args)
    check_edit_numbers(strength=args.strength, self_attention_steps=args.self_attention_steps,
                       guidance_scale=args.guidance_scale, source_guidance_scale=args.source_guidance_scale)
    if args.freeze_last < 0:
        raise UsageError(f"--freeze-last must be >= 0, got {args.freeze_last}")
    check_model_path(args.model)
    images = _read_inputs(args.images)
    pipe = _load(args)
    # every (target, image) pair is one row of a single batch: the model runs once per step for all
    out = edit(pipe, images * len(targets), args.source_prompt, [t for t in targets for _ in images], num_steps=args.steps,
               method=method, strength=args.strength, freeze_last=args.freeze_last,
               source_guidance_scale=args.source_guidance_scale, guidance_scale=args.guidance_scale,
               negative_prompt=args.negative_prompt, direct_inversion=not args.no_direct_inversion,
               self_attention_steps=args.self_attention_steps, state_dtype=_dtype(args.state_dtype),
               resize=args.resize, output_type="pil", progress=not args.quiet, **mode)
    for p in _save_images(out.images, args.output, len(out.images)):
        print(f"wrote {p}")
    if args.save_latent is not None:
        from .latents import take_rows

        inversion = take_rows(out.inversion, range(n))  # the source images once, not once per target
        print(f"wrote {save_latent(_labelled(inversion, args, args.images), args.save_latent)} "
              f"(the exact latent of the source images)")
    return 0


# --- generate -------------------------------------------------------------------------------
def generate_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    _method_args(parser)
    parser.add_argument("--prompt", nargs="*", default=[""],
                        help="prompt(s) or class label(s); one image per prompt, times --count")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--count", type=int, default=1, help="images per prompt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (drawn on the CPU: same on every device)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance (None: 1.0, or 2.0 for the digits model)")
    parser.add_argument("-o", "--output", required=True, help="image file to write (index appended for several)")


def generate_command(args: argparse.Namespace) -> int:
    from . import generate as _generate_module
    import torch

    prompts = [p for p in args.prompt for _ in range(args.count)] if args.prompt else [""] * args.count
    if args.count < 1:
        raise UsageError(f"--count must be >= 1, got {args.count}")
    _check_outputs(args.output, len(prompts), [], IMAGE_SUFFIXES, args.overwrite)
    method, mode = _method(args), _mode(args)
    if args.guidance_scale is not None:  # None: the model's default
        check_finite(guidance_scale=args.guidance_scale)
    model = check_model_path(args.model)
    pipe = _load(args)
    from ..digits import MODEL_DIR

    guidance = args.guidance_scale if args.guidance_scale is not None else (2.0 if model == MODEL_DIR else 1.0)
    out = _generate_module.generate(pipe, prompts, num_steps=args.steps, method=method, guidance_scale=guidance,
                                    negative_prompt=args.negative_prompt, state_dtype=_dtype(args.state_dtype),
                                    generator=torch.Generator().manual_seed(args.seed), output_type="pil",
                                    progress=not args.quiet, **mode)
    for p in _save_images(out.images, args.output, len(out.images)):
        print(f"wrote {p}")
    return 0
