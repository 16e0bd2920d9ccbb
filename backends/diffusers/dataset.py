"""Dataset-scale inversion and reconstruction, in one process or on torch.distributed.

    linmultistep invert-dataset --model digits IMAGES/ --out latents/ --mode bits --batch-size 8
    torchrun --nproc_per_node 2 -m linmultistep.cli invert-dataset --model digits IMAGES/ --out latents/
    linmultistep reconstruct-dataset --model digits latents/ --out back/

Input: a folder (recursive; every file whose extension PIL reads) or a list file (one image per
line, optionally ``path<TAB>prompt``; for a class-conditional model the prompt is the class label).
Output: ``shard-NNNNN.safetensors`` latent files (one batched latent per shard, see
:mod:`.latents`) and ``shard-NNNNN.json`` records, merged by rank 0 into ``manifest.jsonl``: per
image its path, content hash, shard, position, method, grid fingerprint, mode, model (name and a
digest of its weights), prompt, guidance, and ``status`` ('ok' or 'failed' with the error).

Shards are the unit of work and of resumption: shard k goes to rank k mod world size; a rerun skips
every shard whose record file exists (a shard's latent file is written before its record file, both
atomically), so a killed run loses at most the shards in flight and never damages a finished one.

Exact whatever the batching: every mini-batch evaluates the network in chunks of exactly
``batch_size`` rows with ``eval_threads`` CPU threads (:class:`~.adapters.UNetEps` ``eval_batch`` /
``eval_threads``), both recorded in the latent. CPU kernels choose their algorithm by shape and split
their sums by thread count, so with both fixed an image's network outputs, and in mode 'bits' its
reconstruction to the last bit, depend neither on the images it was batched with, nor on the batch size
used later, nor on the rank or the world size (measured: tests/test_dataset.py). On GPUs the same holds
for a given device model and library versions; deterministic kernels are chosen in mode 'bits'.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from linmultistep import State
from linmultistep.fixedpoint import DIGESTS_KEY

from .images import ImageSizeError, load_image, to_pil, to_tensor
from .latents import load_latent, save_latent, take_rows, write_atomic
from .pipeline import invert, model_digest, parts_of, reconstruct

__all__ = ["Dist", "setup_distributed", "list_inputs", "model_digest", "invert_dataset", "reconstruct_dataset",
           "load_image_latent", "read_manifest", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MANIFEST = "manifest.jsonl"


# --- distributed set-up ------------------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: str = "cpu"

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def setup_distributed(device: str | None = None) -> Dist:
    """Rank and world size from the environment ``torchrun`` / ``accelerate launch`` set (RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); the process group is started with NCCL on CUDA,
    gloo on CPU. One process without those variables is world size 1. Each rank takes the GPU of
    its LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device in (None, "cuda")
    dev = f"cuda:{local}" if cuda else (device or "cpu")
    if world > 1 and not torch.distributed.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, dev)


# --- inputs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    path: str
    prompt: Any = None


def list_inputs(source: "str | os.PathLike", prompt: Any = None) -> list[Item]:
    """The images of a folder (recursive, sorted) or of a list file (``path`` or ``path<TAB>prompt``
    per line; relative paths from the list file's folder; '#' lines skipped)."""
    src = Path(source)
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        return [Item(str(p), prompt) for p in files]
    if src.is_file():
        items = []
        for n, line in enumerate(src.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            path, _, own = line.partition("\t")
            p = Path(path.strip())
            items.append(Item(str(p if p.is_absolute() else src.parent / p), own.strip() if own else prompt))
        return items
    raise FileNotFoundError(f"dataset source not found: {src} (give a folder of images or a list file)")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- atomic files --------------------------------------------------------------------------------
def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode())


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def _concat(states: Sequence[State]) -> State:
    """One State whose batch is the concatenation of ``states`` (same method, grid, mode, window)."""
    first = states[0]

    def cat(parts: Sequence[Any]) -> Any:
        e = parts[0]
        if isinstance(e, tuple):
            fields = [None if e[j] is None else torch.cat([p[j] for p in parts]) for j in range(len(e))]
            return type(e)(*fields)
        raise TypeError(f"window entries are NamedTuples, got {type(e).__name__}")

    window = {i: cat([s.window[i] for s in states]) for i in first.window}
    metadata = dict(first.metadata)
    if all(DIGESTS_KEY in s.metadata for s in states):  # mode 'bits': per-row digests concatenate like the rows
        metadata[DIGESTS_KEY] = {k: [r for s in states for r in s.metadata[DIGESTS_KEY][k]]
                                 for k in first.metadata[DIGESTS_KEY]}
    else:
        metadata.pop(DIGESTS_KEY, None)
    return dataclasses.replace(first, window=window, nfe=sum(s.nfe for s in states), metadata=metadata)


def _chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for k in range(0, len(seq), n):
        yield seq[k:k + n]


# --- inversion -----------------------------------------------------------------------------------
def invert_dataset(
    pipe: Any,
    source: "str | os.PathLike",
    out: "str | os.PathLike",
    *,
    prompt: Any = "",
    num_steps: int = 50,
    method: str = "obelm",
    mode: str | None = None,
    guidance_scale: float = 1.0,
    batch_size: int = 8,
    shard_size: int = 64,
    state_dtype: torch.dtype | None = None,
    resize: str | None = None,
    model: str = "",
    eval_threads: int | None = 1,
    progress: bool = True,
    dist: Dist | None = None,
) -> dict:
    """Invert every image of ``source`` into shards under ``out`` (see the module docstring).
    Returns the summary {images, ok, failed, shards_done, shards_skipped, seconds, images_per_s}."""
    for name, v in (("batch_size", batch_size), ("shard_size", shard_size), ("num_steps", num_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    dist = dist or setup_distributed()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = list_inputs(source, prompt)
    if not items:
        raise ValueError(f"no images found in {source}")
    parts = parts_of(pipe)
    digest = model_digest(parts.unet)
    options = {"source": str(source), "prompt": prompt, "num_steps": num_steps, "method": str(method), "mode": mode,
               "guidance_scale": float(guidance_scale), "batch_size": batch_size, "shard_size": shard_size,
               "state_dtype": str(state_dtype), "resize": resize, "model_digest": digest, "eval_threads": eval_threads}
    _check_run(out / "run.json", options, dist)
    shards = list(_chunks(items, shard_size))
    mine = [k for k in range(len(shards)) if k % dist.world == dist.rank]
    bar = None
    if progress and dist.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(shards[k]) for k in mine), desc=f"inverting (rank 0 of {dist.world})", unit="img")
    t0, done, skipped, size = time.time(), 0, 0, None
    for k in mine:
        record_file = out / f"{_shard_name(k)}.json"
        if record_file.is_file():
            skipped += 1
            if bar is not None:
                bar.update(len(shards[k]))
            continue
        records, states = [], []
        for batch in _chunks(shards[k], batch_size):
            good, tensors = [], []
            for item in batch:
                rec = {"path": item.path, "prompt": item.prompt, "shard": k}
                try:
                    rec["sha256"] = _sha256(item.path)
                    x, _ = to_tensor([load_image(item.path)], parts.size_multiple, resize, channels=parts.channels)
                    if size is None:
                        size = tuple(x.shape[-2:])
                    if tuple(x.shape[-2:]) != size:
                        raise ImageSizeError(f"size {tuple(x.shape[-2:])} differs from the dataset's {size}; "
                                             "use resize or separate runs")
                    good.append(rec)
                    tensors.append(x)
                except (OSError, ValueError, TypeError) as exc:
                    rec.update(status="failed", error=f"{type(exc).__name__}: {exc}")
                    records.append(rec)
            if not good:
                continue
            prompts = [r["prompt"] for r in good]
            state = invert(pipe, torch.cat(tensors), prompts if len(set(map(str, prompts))) > 1 else prompts[0],
                           num_steps=num_steps, method=method, mode=mode, guidance_scale=guidance_scale,
                           state_dtype=state_dtype, eval_batch=batch_size, eval_threads=eval_threads)
            for r in good:
                r["position"] = sum(s.x.shape[0] for s in states) + good.index(r)
                r["status"] = "ok"
            states.append(dataclasses.replace(state, metadata={**state.metadata, "prompt": prompts, "batch": None}))
            records.extend(good)
        latent_file = None
        if states:
            state = _concat(states)
            meta = {**states[0].metadata, "model": model or parts.name, "model_digest": digest,
                    "prompt": [p for s in states for p in s.metadata["prompt"]], "batch": int(state.x.shape[0]),
                    "images": [r["path"] for r in records if r.get("status") == "ok"]}
            latent_file = f"{_shard_name(k)}.safetensors"
            save_latent(dataclasses.replace(state, metadata=meta), out / latent_file)
        common = {"latent_file": latent_file, "method": str(states[0].method) if states else None,
                  "fingerprint": states[0].fingerprint if states else None, "mode": states[0].mode if states else None,
                  "num_steps": num_steps, "guidance_scale": float(guidance_scale), "model": model or parts.name,
                  "model_digest": digest, "eval_batch": batch_size, "eval_threads": eval_threads}
        records = [{**r, **common} for r in records]
        _write_text(record_file, json.dumps(records, indent=0) + "\n")  # written last: marks the shard done
        done += 1
        if bar is not None:
            bar.update(len(shards[k]))
            bar.set_postfix(img_s=f"{bar.n / max(time.time() - t0, 1e-9):.1f}")
    if bar is not None:
        bar.close()
    dist.barrier()
    summary = {"images": len(items), "shards_done": done, "shards_skipped": skipped, "seconds": time.time() - t0}
    if dist.rank == 0:
        manifest = _merge(out, len(shards))
        summary.update(ok=sum(r["status"] == "ok" for r in manifest), failed=sum(r["status"] != "ok" for r in manifest))
        summary["images_per_s"] = summary["images"] / max(summary["seconds"], 1e-9)
    dist.barrier()
    return summary


def _check_run(path: Path, options: dict, dist: Dist) -> None:
    """A resumed run must use the options of the run it continues (shards of two settings would mix)."""
    if path.is_file():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(options) if before.get(k) != options.get(k))
        if changed:
            raise ValueError(f"{path.parent} holds a run with other options ({', '.join(changed)} differ: "
                             f"{ {k: before.get(k) for k in changed} } vs { {k: options.get(k) for k in changed} }); "
                             "use another --out folder, or the same options to resume")
    elif dist.rank == 0:
        _write_text(path, json.dumps(options, indent=1) + "\n")
    dist.barrier()


def _merge(out: Path, shards: int) -> list[dict]:
    records = []
    for k in range(shards):
        f = out / f"{_shard_name(k)}.json"
        if f.is_file():
            records.extend(json.loads(f.read_text()))
    _write_text(out / MANIFEST, "".join(json.dumps(r) + "\n" for r in records))
    return records


def read_manifest(out: "str | os.PathLike") -> list[dict]:
    """The merged records of an ``invert_dataset`` output folder."""
    f = Path(out) / MANIFEST
    if not f.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {out}: not an invert-dataset output folder, or its run did not finish")
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def load_image_latent(out: "str | os.PathLike", record: "dict | str", device: Any = None) -> State:
    """The latent of one image (a manifest record, or its path), ready for :func:`reconstruct` / ``edit``."""
    out = Path(out)
    if isinstance(record, (str, os.PathLike)):
        matches = [r for r in read_manifest(out) if r["path"] == str(record)]
        if not matches:
            raise KeyError(f"{record} is not in the manifest of {out}")
        record = matches[0]
    if record.get("status") != "ok":
        raise ValueError(f"{record['path']} was not inverted: {record.get('error')}")
    shard = load_latent(out / record["latent_file"], device=device)
    j = int(record["position"])
    one = take_rows(shard, [j])  # window rows, per-row prompts and mode 'bits' digests
    return dataclasses.replace(one, metadata={**one.metadata, "images": [record["path"]]})


# --- reconstruction ------------------------------------------------------------------------------
def reconstruct_dataset(
    pipe: Any,
    latents: "str | os.PathLike",
    out: "str | os.PathLike",
    *,
    batch_size: int = 8,
    verify: bool = False,
    progress: bool = True,
    dist: Dist | None = None,
) -> dict:
    """Reconstruct every inverted image of ``latents`` into ``out`` (PNG, numbered by manifest order),
    in batches of ``batch_size`` (any size: the latents record how the network was evaluated). With
    ``verify``, compare each reconstruction with its original file (max abs pixel difference)."""
    dist = dist or setup_distributed()
    latents, out = Path(latents), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = [r for r in read_manifest(latents) if r["status"] == "ok"]
    digest = model_digest(parts_of(pipe).unet)
    other = {r["model_digest"] for r in records} - {digest}
    if other:
        raise ValueError(f"these latents were inverted with another model (weights digest {sorted(other)}, this "
                         f"model {digest}); reconstruct with the same model")
    mine = [r for n, r in enumerate(records) if r["shard"] % dist.world == dist.rank]
    t0, worst, written = time.time(), 0.0, 0
    for group in _chunks(mine, batch_size):
        state = _concat([load_image_latent(latents, r) for r in group])
        state = dataclasses.replace(state, metadata={**state.metadata, "prompt": [p for r in group for p in [r["prompt"]]],
                                                     "batch": len(group)})
        x = reconstruct(pipe, state, output_type="pt", progress=False).images
        for r, img in zip(group, to_pil(x)):
            name = out / f"{records.index(r):06d}_{Path(r['path']).stem}.png"
            img.save(name)
            written += 1
            if verify:
                ref, _ = to_tensor([load_image(r["path"])], parts_of(pipe).size_multiple, None,
                                   channels=parts_of(pipe).channels)
                back, _ = to_tensor([img], parts_of(pipe).size_multiple, None, channels=parts_of(pipe).channels)
                worst = max(worst, float((back - ref).abs().max()))
    dist.barrier()
    return {"images": written, "seconds": time.time() - t0, "max_abs_error": worst if verify else None}
