"""``linmultistep invert-dataset`` / ``reconstruct-dataset`` (see :mod:`.dataset`); run them under
``torchrun --nproc_per_node K -m linmultistep.cli ...`` or ``accelerate launch -m linmultistep.cli ...``
for one rank per device."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from linmultistep.modes import mode_names

from .cli import DTYPES, UsageError, dtype_named, load_pipeline

__all__ = ["invert_arguments", "invert_run", "reconstruct_arguments", "reconstruct_run"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="local diffusers pipeline directory, or 'digits' (the shipped model)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="network dtype (default float32)")
    parser.add_argument("--device", default=None, help="torch device (default: this rank's GPU if any, else cpu)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images the sampler advances together (default: one evaluation chunk's worth); the "
                             "latents do not depend on it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (never done without it)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def invert_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("source", help="folder of images (recursive) or a list file (path[TAB]prompt per line)")
    parser.add_argument("--out", required=True, help="output folder: shard files and manifest.jsonl")
    parser.add_argument("--prompt", default="", help="prompt (or class label) of images without their own (default '')")
    parser.add_argument("--prompt-from-folder", action="store_true",
                        help="SOURCE is a folder of sub-folders (ImageFolder layout, SOURCE/<prompt>/<image>): each "
                             "image's prompt or class label is its sub-folder's name")
    parser.add_argument("--steps", type=int, default=50, help="number of inference steps N (default 50)")
    parser.add_argument("--method", default="obelm", choices=["obelm", "bdia", "edict", "ddim"], help="(default obelm)")
    parser.add_argument("--mode", choices=mode_names(), default=None,
                        help="(default: the core's default for the method; 'bits' reconstructs to the last bit)")
    parser.add_argument("--guidance-scale", type=float, default=1.0, help="(default 1.0: no guidance)")
    parser.add_argument("--state-dtype", choices=DTYPES, default=None, help="dtype of the sampler states (default: the network's)")
    parser.add_argument("--shard-size", type=int, default=64, help="images per shard file (default 64)")
    parser.add_argument("--resize", choices=["down", "up", "nearest"], default=None, help="resize images the model cannot take")
    parser.add_argument("--eval-threads", type=int, default=1,
                        help="CPU threads of each network call, recorded in the latents (default 1: the same bits on "
                             "every rank and world size; scale with ranks)")
    parser.add_argument("--eval-chunk", type=int, default=None,
                        help="rows per network call, recorded in the latents (default: fixed by the model, 32 for "
                             "digits, 8 for 64x64 latents); another value gives latents with other last bits")


def _check_numbers(args: argparse.Namespace, names: tuple) -> None:
    for name in names:
        v = getattr(args, name.replace("-", "_"), None)
        if v is not None and v < 1:
            raise UsageError(f"--{name} must be at least 1, got {v}")


def _check_invert(args: argparse.Namespace) -> None:
    """What can be checked without torch, before the model loads: numbers, the distributed environment,
    the inputs and the output folder."""
    from .dataset_files import check_output_folder, distributed_env, list_inputs

    _check_numbers(args, ("batch-size", "shard-size", "steps", "eval-threads", "eval-chunk"))
    distributed_env()
    items = list_inputs(args.source, args.prompt, args.prompt_from_folder)
    if not items:
        raise UsageError(f"no images found in {args.source}")
    src = Path(args.source)
    check_output_folder(args.out, [i.path for i in items] + ([] if src.is_dir() else [src]),
                        [src] if src.is_dir() else [])


def invert_run(args: argparse.Namespace) -> int:
    _check_invert(args)
    from .dataset import invert_dataset, setup_distributed

    dist = setup_distributed(args.device)
    pipe = load_pipeline(args.model, args.dtype, dist.device)
    summary = invert_dataset(pipe, args.source, args.out, prompt=args.prompt, prompt_from_folder=args.prompt_from_folder,
                             num_steps=args.steps, method=args.method,
                             mode=args.mode, guidance_scale=args.guidance_scale, batch_size=args.batch_size,
                             shard_size=args.shard_size, state_dtype=dtype_named(args.state_dtype), resize=args.resize,
                             model=str(args.model), eval_threads=args.eval_threads, eval_chunk=args.eval_chunk,
                             overwrite=args.overwrite, progress=not args.quiet, dist=dist)
    if dist.rank == 0:
        for note in summary["notes"]:
            print(note)
        print(f"{summary['ok']} of {summary['images']} images inverted, {summary['failed']} failed "
              f"({summary['shards_skipped']} shards already done, {summary['shards_done']} inverted now); "
              f"{summary['images_per_s']:.2f} images/s; manifest {args.out}/manifest.jsonl")
    return 0


def reconstruct_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("latents", help="an invert-dataset output folder")
    parser.add_argument("--out", required=True, help="folder for the reconstructed images")
    parser.add_argument("--verify", action="store_true", help="compare each image with its original file")


def _check_reconstruct(args: argparse.Namespace) -> None:
    from .dataset_files import check_output_folder, check_outputs_free, distributed_env, output_names, read_manifest

    _check_numbers(args, ("batch-size",))
    distributed_env()
    records = [r for r in read_manifest(args.latents) if r.get("status") == "ok"]
    check_output_folder(args.out, [r["path"] for r in records], [args.latents])
    check_outputs_free(args.out, output_names(records), args.overwrite)


def reconstruct_run(args: argparse.Namespace) -> int:
    _check_reconstruct(args)
    from .dataset import reconstruct_dataset, setup_distributed

    dist = setup_distributed(args.device)
    pipe = load_pipeline(args.model, args.dtype, dist.device)
    summary = reconstruct_dataset(pipe, args.latents, args.out, batch_size=args.batch_size, verify=args.verify,
                                  overwrite=args.overwrite, progress=not args.quiet, dist=dist)
    files = summary.pop("files")
    print(json.dumps({"rank": dist.rank, **summary, "files": len(files)}))
    if args.verify and summary["differing"]:
        print(f"linmultistep reconstruct-dataset: {len(summary['differing'])} image(s) differ from their originals, "
              f"e.g. {summary['differing'][0]}", file=sys.stderr)
        return 1
    return 0
