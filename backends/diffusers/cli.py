"""``linmultistep invert | reconstruct | edit | generate --model MODEL ...`` for a locally
stored diffusers model (a directory written by ``save_pretrained``, or a built-in name such as
``digits``, the model shipped with the package; nothing is downloaded). ``--model`` is resolved by
[`resolve_model`][linmultistep.backends.diffusers.models.resolve_model], the same resolver as the
Python API.

    linmultistep invert --model ./sd15 photo.png --prompt "a cat" --steps 50 -o cat.safetensors
    linmultistep invert --model digits d5.png d6.png --prompt 5 6 -o two.safetensors   # one label per image
    linmultistep reconstruct --model ./sd15 cat.safetensors -o cat_rec.png
    linmultistep edit --model ./sd15 photo.png --source-prompt "a cat" --target-prompt "a dog" -o dog.png
    linmultistep generate --model digits --prompt 0 1 2 --count 4 --seed 0 --grid -o digits.png

Prompts (class labels for a class-conditional model): one for every image, or one per image
(``--prompt 5 6``), or from ``--prompt-file`` (one per line, or a CSV with ``image`` and
``prompt`` columns), or the name of each image's folder (``--prompt-from-folder``, the ImageFolder
convention). An option given twice is an error, never "the last one wins".

Everything the user gave is checked before torch or diffusers is imported (options, input files,
output paths, the image size against the model's trained size); a bad value ends in one line
naming the option and exit code 2 (see [`main`][linmultistep.cli.main]).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
from pathlib import Path
from typing import Any, Sequence

from linmultistep.errors import ArgumentError

from .arguments import check_edit_numbers, check_finite
from .models import builtin_model, load_pipeline, resolve_model, trained_size

__all__ = ["invert_command", "reconstruct_command", "edit_command", "generate_command", "UsageError", "Once",
           "per_image_prompts", "label_slug"]

DTYPES = ("float32", "float64", "float16", "bfloat16")
METHODS = ("obelm", "bdia", "edict", "ddim")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_STEPS = 10_000  # more than any schedule gives distinct timesteps for (1000 for Stable Diffusion)


class UsageError(ValueError):
    """A command-line value that cannot work; reported as one line with exit code 2."""


def check_model_path(path: "str | os.PathLike") -> Path:
    """The model folder ``--model`` means, or a [`ModelPathError`][linmultistep.backends.diffusers.models.ModelPathError]
    naming what is missing (no import of torch)."""
    return resolve_model(path)


class Once(argparse.Action):
    """An option that may be given once (with one or more values): a repeated ``--prompt 8 --prompt 4``
    is an error naming the option, not the last value silently winning."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        seen = namespace.__dict__.setdefault("_given_once", set())
        if self.dest in seen:
            parser.error(f"{option_string} is given twice; give all its values after one {option_string} "
                         f"(e.g. {option_string} 5 6 for one value per image)")
        seen.add(self.dest)
        setattr(namespace, self.dest, values)


# --- options ----------------------------------------------------------------------------------
def _common(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("--model", required=True,
                        help="local diffusers pipeline directory (save_pretrained layout), or a built-in name "
                             "('digits', the shipped model); a folder without model_index.json never shadows a name")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="network dtype")
    parser.add_argument("--state-dtype", choices=DTYPES, default=None,
                        help="dtype of the sampler states (None: the network's); float64 makes round trips ~1e-12")
    parser.add_argument("--device", default=None, help="torch device (None: cuda if available, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or loading messages")
    parser.add_argument("--max-sequence-length", type=int, default=None,
                        help="flow (SD3-style) models: tokens of the T5 slot of the prompt embeddings (None: the CLIP "
                             "tokenizer's length when the pipeline has no T5, e.g. 16 for mnist-flow; else diffusers' 256)")
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
    parser.add_argument("--allow-size-mismatch", action="store_true",
                        help="run on images far from the model's trained size (more than 4x its pixels, or under "
                             "1/4): slow, and the model was not trained for it")


def _prompt_args(parser: argparse.ArgumentParser, option: str = "--prompt", default: Any = None,
                 required: bool = False, what: str = "prompt (or class label)") -> None:
    parser.add_argument(option, nargs="+", action=Once, default=default, required=required,
                        help=f"{what}: one for every image, or one per image ({option} 5 6; give the images "
                             "first, or end the values with --)")
    # the other sources of the same prompts
    parser.add_argument("--prompt-file", default=None, metavar="FILE",
                        help=f"{option} values from a file: one per line (in the order of the images), or a CSV "
                             "with columns image,prompt (or image,label)")
    parser.add_argument("--prompt-from-folder", action="store_true",
                        help=f"each image's {option} (class label) is the name of its folder (the ImageFolder "
                             "convention: images/5/a.png has label 5)")


def _positive_steps(steps: int) -> None:
    if not 1 <= steps <= MAX_STEPS:
        raise UsageError(f"--steps must be between 1 and {MAX_STEPS}, got {steps}")


def _mode_options(args: argparse.Namespace) -> dict | None:
    options = {k: v for k, v in (("eps_bound", args.eps_bound), ("data_bound", args.data_bound)) if v is not None}
    if options and args.mode != "bits":
        raise UsageError("--eps-bound / --data-bound apply to --mode bits only")
    return options or None


def _mode(args: argparse.Namespace) -> dict:
    """mode= and mode_options= for invert/edit/generate (checked by `_method`)."""
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


def dtype_named(name: str | None) -> Any:
    """The torch dtype of a --dtype / --state-dtype value (None stays None)."""
    import torch

    return None if name is None else getattr(torch, name)


# --- prompts ----------------------------------------------------------------------------------
def per_image_prompts(values: "Sequence[str] | None", images: Sequence[str], *, prompt_file: str | None = None,
                      from_folder: bool = False, option: str = "--prompt", default: Any = "") -> Any:
    """The prompt argument for ``images``: one value for all, or one per image (a list).

    ``values`` from ``--prompt`` (one, or one per image), else ``prompt_file`` (one per line, or a CSV
    with ``image`` and ``prompt``/``label`` columns), else each image's folder name (``from_folder``),
    else ``default``. Giving more than one source, or a count that is neither 1 nor the number of
    images, is a [`UsageError`][linmultistep.backends.diffusers.cli.UsageError] naming it."""
    given = [name for name, v in ((option, values), ("--prompt-file", prompt_file),
                                  ("--prompt-from-folder", from_folder or None)) if v is not None]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} both give the prompts; give one of them")
    if from_folder:
        prompts = [Path(p).resolve().parent.name for p in images]
    elif prompt_file is not None:
        prompts = _prompts_from_file(prompt_file, images)
    elif values is not None:
        prompts = list(values)
    else:
        return default
    if len(prompts) == 1:
        return prompts[0]
    if len(prompts) != len(images):
        source = option if values is not None else "--prompt-file"
        raise UsageError(f"{source} gives {len(prompts)} prompts for {len(images)} images; give one for all, "
                         "or one per image")
    return prompts


def _prompts_from_file(path: str, images: Sequence[str]) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--prompt-file {path}: file not found")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() != ".csv":
        lines = text.splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        return lines
    rows = list(csv.DictReader(text.splitlines()))
    fields = {f.strip().lower(): f for f in (rows[0].keys() if rows else [])}
    column = fields.get("prompt") or fields.get("label")
    if "image" not in fields or column is None:
        raise UsageError(f"--prompt-file {path}: a CSV needs a header with columns image and prompt (or label), "
                         f"got {sorted(fields)}")
    by_key: dict[str, str] = {}
    for row in rows:
        key = row[fields["image"]].strip()
        by_key[key] = row[column]
        by_key.setdefault(Path(key).name, row[column])
    missing = [im for im in images if im not in by_key and Path(im).name not in by_key]
    if missing:
        raise UsageError(f"--prompt-file {path} has no row for {', '.join(missing[:3])}"
                         f"{' ...' if len(missing) > 3 else ''}")
    return [by_key.get(im, by_key.get(Path(im).name, "")) for im in images]


def label_slug(label: Any) -> str:
    """A prompt or class label as a file-name part: ``4`` -> ``4``, ``a red car`` -> ``a-red-car``."""
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "-", str(label)).strip("-.")[:40]
    return slug or "empty"


def _unique(names: list[str]) -> list[str]:
    """Names made unique by their position where two are the same."""
    return [f"{n}-{k}" if names.count(n) > 1 else n for k, n in enumerate(names)]


# --- files ------------------------------------------------------------------------------------
def _named(output: str, parts: "list[list[str]]") -> list[Path]:
    """Output files: ``output`` itself for one result, else ``stem_<parts>suffix`` per result."""
    out = Path(output)
    if len(parts) == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{'_'.join(p)}{out.suffix}") for p in parts]


def _numbered(output: str, count: int) -> list[Path]:
    return _named(output, [[str(k)] for k in range(count)])


def _check_outputs(paths: "list[Path]", output: str, inputs: list, suffixes: tuple, overwrite: bool,
                   option: str = "-o/--output") -> None:
    """Before any work: the output has a suffix we can write, is none of the inputs, and (unless
    --overwrite) replaces nothing. A latent written over its own image would destroy the input."""
    if Path(output).suffix.lower() not in suffixes:
        raise UsageError(f"{option} {output!r} must end with {' or '.join(suffixes)}")
    given = {Path(i).resolve() for i in inputs}
    for p in paths:
        if p.resolve() in given:
            raise UsageError(f"{option} {p} is one of the inputs; refusing to write over it")
        if p.exists() and not overwrite:
            raise UsageError(f"{p} exists; pass --overwrite to replace it")
        if p.exists() and p.is_dir():
            raise UsageError(f"{option} {p} is a directory")


def _read_inputs(paths: list, args: argparse.Namespace, folder: Path) -> list:
    """Every input image opened (upright, size-checked) before the model loads: a bad file is named
    before minutes of loading, and nothing is read twice. Images far from the model's trained size
    are refused here unless --allow-size-mismatch (a run at 424x640 on an 8x8 model takes hours)."""
    from .images import check_trained_size, load_image

    images = [load_image(p) for p in paths]
    if not getattr(args, "allow_size_mismatch", False):
        trained = trained_size(folder)
        for p, im in zip(paths, images):
            check_trained_size((im.size[1], im.size[0]), trained, what=f"image {p}", allow="--allow-size-mismatch")
    return images


def _save_images(images: list, paths: "list[Path]") -> list[Path]:
    from .latents import write_atomic
    import io

    for img, p in zip(images, paths):
        p.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        img.save(buf, format=_pil_format(p))
        write_atomic(p, buf.getvalue())  # an interrupted run leaves no half-written image
    return list(paths)


def _pil_format(path: Path) -> str:
    from PIL import Image

    Image.init()
    return Image.EXTENSION[path.suffix.lower()]


def _load(args: argparse.Namespace) -> Any:
    return load_pipeline(args.model, args.dtype, args.device, quiet=args.quiet)


def is_flow_pipeline(pipe: Any) -> bool:
    """A transformer + flow-matching pipeline (SD3, FLUX, the shipped mnist-flow): served by
    :mod:`.flow_pipeline`; a UNet pipeline by :mod:`.pipeline`."""
    return getattr(pipe, "unet", None) is None and getattr(pipe, "transformer", None) is not None


def binding(pipe: Any) -> Any:
    """The module whose invert / reconstruct / edit / generate serve ``pipe``."""
    if is_flow_pipeline(pipe):
        from . import flow_pipeline

        return flow_pipeline
    from . import pipeline

    return pipeline


def _flow_text(args: argparse.Namespace, pipe: Any) -> dict:
    """``max_sequence_length`` for a flow pipeline: the option, else the CLIP tokenizer's length when the
    pipeline has no T5 (its T5 slot is zeros; mnist-flow was trained with 16 of them), else diffusers' default."""
    msl = getattr(args, "max_sequence_length", None)
    if msl is None and getattr(pipe, "text_encoder_3", None) is None and getattr(pipe, "tokenizer", None) is not None:
        msl = int(pipe.tokenizer.model_max_length)
    return {} if msl is None else {"max_sequence_length": int(msl)}


def _network_device(pipe: Any) -> Any:
    return next((pipe.transformer if is_flow_pipeline(pipe) else pipe.unet).parameters()).device


def _labelled(latent: Any, args: argparse.Namespace, images: list) -> Any:
    """The latent with the model folder and input files recorded (the Python API records what it knows)."""
    import dataclasses

    return dataclasses.replace(latent, metadata={**latent.metadata, "model": str(check_model_path(args.model).resolve()),
                                                 "images": [str(p) for p in images]})


# --- invert ---------------------------------------------------------------------------------
def invert_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    _method_args(parser)
    _image_args(parser)
    parser.add_argument("images", nargs="+", help="image files (any PIL mode; alpha composited on white)")
    _prompt_args(parser)
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance of the inversion")
    parser.add_argument("-o", "--output", required=True, help="latent file to write (.safetensors)")


def invert_command(args: argparse.Namespace) -> int:
    _check_outputs([Path(args.output)], args.output, list(args.images), (".safetensors",), args.overwrite)
    method, mode = _method(args), _mode(args)
    check_finite(guidance_scale=args.guidance_scale)
    prompt = per_image_prompts(args.prompt, args.images, prompt_file=args.prompt_file,
                               from_folder=args.prompt_from_folder)
    folder = check_model_path(args.model)
    images = _read_inputs(args.images, args, folder)
    from .latents import save_latent

    pipe = _load(args)
    extra = _flow_text(args, pipe) if is_flow_pipeline(pipe) else {}
    latent = binding(pipe).invert(pipe, images, prompt, num_steps=args.steps, method=method, **extra,
                                  guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt,
                                  state_dtype=dtype_named(args.state_dtype), resize=args.resize,
                                  allow_size_mismatch=args.allow_size_mismatch, progress=not args.quiet, **mode)
    path = save_latent(_labelled(latent, args, args.images), args.output)
    print(f"wrote {path} ({latent.method}, mode {latent.mode}, {args.steps} steps, {latent.nfe} network evaluations)")
    return 0


# --- reconstruct ----------------------------------------------------------------------------
def reconstruct_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("latent", help="latent file written by 'linmultistep invert' (or edit --save-latent)")
    parser.add_argument("--prompt", nargs="+", action=Once, default=None,
                        help="override the recorded prompt(s), one for all or one per image (an edit, not a "
                             "reconstruction)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="override the recorded guidance scale (None: the recorded one)")
    parser.add_argument("--ignore-model-mismatch", action="store_true",
                        help="sample a latent inverted with another model's weights anyway (not a reconstruction)")
    parser.add_argument("--no-restore-size", action="store_true",
                        help="keep the model's size for images resized at inversion (--resize)")
    parser.add_argument("--approximate", action="store_true",
                        help="a mode-bits latent from another numerics environment (CPU kind, torch build, threads): "
                             "reconstruct it approximately in float arithmetic (its expected error is stated) "
                             "instead of refusing")
    parser.add_argument("--allow-legacy", action="store_true",
                        help="read a latent file written before integrity digests (unchecked, with a warning)")
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

    dt = dtype_named(dtype_name)

    def convert(t: Any) -> Any:
        if t is None:
            return None
        return t.to(device=device if device is not None else t.device, dtype=dt if dt is not None else t.dtype)

    window = {i: type(e)(*map(convert, e)) for i, e in latent.window.items()}
    return dataclasses.replace(latent, window=window)


def reconstruct_command(args: argparse.Namespace) -> int:
    if Path(args.output).suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"-o/--output {args.output!r} must end with {' or '.join(IMAGE_SUFFIXES)}")
    if args.guidance_scale is not None:  # None: the latent's own
        check_finite(guidance_scale=args.guidance_scale)
    check_model_path(args.model)
    from .latents import load_latent

    latent = load_latent(args.latent, allow_legacy=args.allow_legacy)  # checked before the model loads
    latent = _convert(latent, args.state_dtype)
    batch = int(latent.x.shape[0])
    prompt = per_image_prompts(args.prompt, [args.latent] * batch, default=None) if args.prompt else None
    paths = _numbered(args.output, batch)
    _check_outputs(paths, args.output, [args.latent], IMAGE_SUFFIXES, args.overwrite)
    pipe = _load(args)
    latent = _convert(latent, device=_network_device(pipe))  # the states live where the network runs
    if is_flow_pipeline(pipe):  # flow latents are float states: no numerics environment, no resize record
        if args.approximate:
            raise UsageError("--approximate applies to mode-bits latents of UNet models; a flow model's latent "
                             "reconstructs in its own mode")
        extra = {}
    else:
        extra = {"restore_size": not args.no_restore_size, "exact": not args.approximate}
    images = binding(pipe).reconstruct(pipe, latent, prompt, guidance_scale=args.guidance_scale, output_type="pil",
                                       progress=not args.quiet, check_model=not args.ignore_model_mismatch,
                                       **extra).images
    for p in _save_images(images, paths):
        print(f"wrote {p}")
    return 0


# --- edit -----------------------------------------------------------------------------------
def edit_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    _method_args(parser)
    _image_args(parser)
    parser.add_argument("images", nargs="+", help="image files")
    _prompt_args(parser, "--source-prompt", what="what the images show (text, or a class label)")
    parser.add_argument("--target-prompt", required=True, nargs="+", action=Once,
                        help="what they should show; several: every image edited to each, in one batch "
                             "(outputs named by target)")
    parser.add_argument("--per-image-targets", action="store_true",
                        help="the target prompts are one per image (image k edited to target k) instead of each "
                             "for every image")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--strength", type=float, default=1.0, help="fraction of the steps re-sampled, in (0, 1]")
    parser.add_argument("--freeze-last", type=int, default=0, help="last steps sampled with the source prompt")
    parser.add_argument("--guidance-scale", type=float, default=7.5, help="guidance of the target branch")
    parser.add_argument("--source-guidance-scale", type=float, default=1.0, help="guidance of the inversion")
    parser.add_argument("--no-direct-inversion", action="store_true",
                        help="no pinned source branch (with --cross-attention-steps: classical Prompt-to-Prompt, the "
                             "source branch sampled freely; else a plain edit, nothing shared)")
    parser.add_argument("--self-attention-steps", type=float, default=0.4,
                        help="fraction of the (noise-most) steps with source self-attention maps, in [0, 1]")
    parser.add_argument("--cross-attention-steps", type=float, default=0.0,
                        help="Prompt-to-Prompt word swap: fraction of the (noise-most) steps with the source's "
                             "cross-attention maps, in [0, 1] (prompts of equal token counts)")
    parser.add_argument("--save-latent", default=None, metavar="FILE.safetensors",
                        help="also write the exact latent of the source images (reconstruct gives them back)")
    parser.add_argument("--grid", action="store_true",
                        help="write one image grid to -o: the sources in the first row, then one row per target")
    parser.add_argument("-o", "--output", required=True,
                        help="image file to write (several: named by image and target, e.g. out_0_to-4.png)")


def _edit_rows(images: list[str], targets: list[str], per_image: bool) -> "tuple[list[int], list[str], list[list[str]]]":
    """The batch of an edit: for each row, the image it edits, its target and its output-name parts."""
    n = len(images)
    if per_image and len(targets) != n:
        raise UsageError(f"--per-image-targets: --target-prompt gives {len(targets)} targets for {n} images")
    stems = [Path(p).stem for p in images]
    image_part = _unique(stems) if len(set(stems)) == n else [str(k) for k in range(n)]
    if per_image:
        rows = list(range(n))
        row_targets = targets
    else:
        rows = [k for _ in targets for k in range(n)]
        row_targets = [t for t in targets for _ in range(n)]
    target_part = [f"to-{label_slug(t)}" for t in row_targets]
    several_targets = per_image or len(targets) > 1
    parts = [([image_part[k]] if n > 1 else []) + ([tp] if several_targets else []) for k, tp in zip(rows, target_part)]
    return rows, row_targets, parts


def edit_command(args: argparse.Namespace) -> int:
    n, targets = len(args.images), list(args.target_prompt)
    rows, row_targets, parts = _edit_rows(list(args.images), targets, args.per_image_targets)
    count = len(rows)
    names = [Path(args.output)] if args.grid else _named(args.output, _unique_parts(parts))
    _check_outputs(names, args.output, list(args.images), IMAGE_SUFFIXES, args.overwrite)
    if args.save_latent is not None:
        _check_outputs([Path(args.save_latent)], args.save_latent, list(args.images) + names,
                       (".safetensors",), args.overwrite, option="--save-latent")
    method, mode = _method(args), _mode(args)
    check_edit_numbers(strength=args.strength, self_attention_steps=args.self_attention_steps,
                       guidance_scale=args.guidance_scale, source_guidance_scale=args.source_guidance_scale,
                       cross_attention_steps=args.cross_attention_steps)
    if args.freeze_last < 0:
        raise UsageError(f"--freeze-last must be >= 0, got {args.freeze_last}")
    source = per_image_prompts(args.source_prompt, args.images, prompt_file=args.prompt_file,
                               from_folder=args.prompt_from_folder, option="--source-prompt", default=None)
    if source is None:
        raise UsageError("give what the images show: --source-prompt, --prompt-file or --prompt-from-folder")
    row_sources = [source[k] for k in rows] if isinstance(source, list) else source
    folder = check_model_path(args.model)
    images = _read_inputs(args.images, args, folder)
    from .latents import save_latent, take_rows

    pipe = _load(args)
    if is_flow_pipeline(pipe):
        unet_only = [name for name, given in (("--freeze-last", args.freeze_last != 0),
                                              ("--cross-attention-steps", args.cross_attention_steps != 0))
                     if given]
        if unet_only:
            raise UsageError(f"{', '.join(unet_only)}: UNet models only; {args.model} is a flow (transformer) model")
        print("flow model: a plain edit (the Direct-Inversion source branch and attention sharing are UNet-only)")
        extra = _flow_text(args, pipe)
    else:
        extra = {"freeze_last": args.freeze_last, "direct_inversion": not args.no_direct_inversion,
                 "self_attention_steps": args.self_attention_steps,
                 "cross_attention_steps": args.cross_attention_steps}
    # every (image, target) pair is one row of a single batch: the model runs once per step for all
    out = binding(pipe).edit(pipe, [images[k] for k in rows], row_sources, row_targets, num_steps=args.steps,
                             method=method, strength=args.strength, source_guidance_scale=args.source_guidance_scale,
                             guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt,
                             state_dtype=dtype_named(args.state_dtype), resize=args.resize,
                             allow_size_mismatch=args.allow_size_mismatch, output_type="pil",
                             progress=not args.quiet, **extra, **mode)
    if args.grid:
        _write_edit_grid(images, out.images, n, count, args.output)
    else:
        for p in _save_images(out.images, names):
            print(f"wrote {p}")
    if args.save_latent is not None:
        first = [rows.index(k) for k in range(n)]  # the source images once, not once per target
        inversion = take_rows(out.inversion, first)
        print(f"wrote {save_latent(_labelled(inversion, args, args.images), args.save_latent)} "
              f"(the exact latent of the source images)")
    return 0


def _unique_parts(parts: "list[list[str]]") -> "list[list[str]]":
    joined = _unique(["_".join(p) for p in parts])
    return [[j] for j in joined]


def _write_edit_grid(sources: list, edited: list, n: int, count: int, output: str) -> None:
    from .images import image_grid

    mode = edited[0].mode
    first = [im.convert(mode).resize(edited[0].size) for im in sources]
    grid = image_grid(first + list(edited), rows=1 + count // n, columns=n)
    print(f"wrote {_save_images([grid], [Path(output)])[0]} (sources in the first row, one row per target)")


# --- generate -------------------------------------------------------------------------------
def generate_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    _method_args(parser)
    parser.add_argument("--prompt", nargs="*", action=Once, default=[""],
                        help="prompt(s) or class label(s); --count images for each")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--count", type=int, default=1, help="images per prompt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (drawn on the CPU: same on every device)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance (None: the model's default: 2.0 for digits, else 1.0)")
    parser.add_argument("--grid", action="store_true", help="write one image grid to -o: a row per prompt, "
                                                            "--count columns")
    parser.add_argument("-o", "--output", required=True,
                        help="image file to write (several: named by prompt and index, e.g. out_3_0.png)")


def generate_command(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise UsageError(f"--count must be >= 1, got {args.count}")
    labels = list(args.prompt) or [""]
    prompts = [p for p in labels for _ in range(args.count)]
    label_parts = _unique([label_slug(p) for p in labels])
    parts = [([label_parts[j]] if len(labels) > 1 else []) + ([str(k)] if args.count > 1 else [])
             for j in range(len(labels)) for k in range(args.count)]
    paths = [Path(args.output)] if args.grid else _named(args.output, parts)
    _check_outputs(paths, args.output, [], IMAGE_SUFFIXES, args.overwrite)
    method, mode = _method(args), _mode(args)
    if args.guidance_scale is not None:  # None: the model's default
        check_finite(guidance_scale=args.guidance_scale)
    check_model_path(args.model)
    model = builtin_model(args.model)
    import torch

    pipe = _load(args)
    default = model.guidance_scale if model is not None else 1.0
    guidance = args.guidance_scale if args.guidance_scale is not None else default
    extra = {}
    if is_flow_pipeline(pipe):
        from .flow_pipeline import generate

        extra = _flow_text(args, pipe)
    else:
        from .generation import generate
    out = generate(pipe, prompts, **extra, num_steps=args.steps, method=method, guidance_scale=guidance,
                   negative_prompt=args.negative_prompt, state_dtype=dtype_named(args.state_dtype),
                   generator=torch.Generator().manual_seed(args.seed), output_type="pil",
                   progress=not args.quiet, **mode)
    if args.grid:
        from .images import image_grid

        grid = image_grid(out.images, rows=len(labels), columns=args.count)
        print(f"wrote {_save_images([grid], paths)[0]} ({len(labels)} x {args.count} grid)")
        return 0
    for p in _save_images(out.images, paths):
        print(f"wrote {p}")
    return 0
