"""Dataset-scale inversion and reconstruction, in one process or on torch.distributed.

    linmultistep invert-dataset --model digits IMAGES/ --out latents/ --mode bits
    torchrun --nproc_per_node 2 -m linmultistep.cli invert-dataset --model digits IMAGES/ --out latents/
    linmultistep reconstruct-dataset --model digits latents/ --out back/

Input: a folder (recursive; every file whose extension PIL reads) or a list file (one image per
line, optionally ``path<TAB>prompt``; for a class-conditional model the prompt is the class label).
Output: ``shard-NNNNN.safetensors`` latent files (one batched latent per shard, see
:mod:`.latents`) and ``shard-NNNNN.json`` records, merged by rank 0 into ``manifest.jsonl``: per
image its path (relative to the manifest's folder), content hash, shard, position, method, grid
fingerprint, mode, model (name and a digest of its weights), prompt, guidance, and ``status`` ('ok' or
'failed' with the error). Files: :mod:`.dataset_files` (what is refused, and why).

Shards are the unit of work and of resumption: shard k goes to rank k mod world size. A rerun on
the same folder keeps every shard whose record file exists and whose latent file is there with the
recorded SHA-256, re-inverts the images of any other (saying why), inverts images that are new or
whose file changed into new shards, and lists each image once. A shard's latent file is written
before its record file, both atomically, so a killed run loses at most the shards in flight.

Latents independent of the batching: the network is always evaluated in chunks of a fixed number of
rows, :func:`~.adapters.eval_chunk_for` the model (padded; ``eval_chunk=`` overrides it), with
``eval_threads`` CPU threads, both recorded in the latent. CPU kernels choose their algorithm by
shape and split their sums by thread count, so with both fixed an image's network outputs, and in
mode 'bits' its latent to the last bit, depend neither on ``batch_size``, nor on the images it was
batched with, nor on the rank or the world size (tests/test_bad_inputs_dataset.py). On GPUs the same
holds for a given device model and library versions.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from linmultistep import State
from linmultistep.fixedpoint import DIGESTS_KEY

from .adapters import encode_classes, eval_chunk_for, is_class_conditional, is_conditional
from .dataset_files import (IMAGE_EXTENSIONS, MANIFEST, RECORD_FORMAT, RUN_FILE, DatasetError, Item,
                            check_output_folder, check_outputs_free, distributed_env, list_inputs, output_names,
                            read_json, read_json_lines, read_manifest, resolve_path, sha256_file, stored_path)
from .images import ImageSizeError, load_image, to_tensor
from .latents import load_latent, save_latent, take_rows, write_atomic
from .pipeline import invert, model_digest, parts_of, reconstruct
from .settings import InversionSettings, settings_of

__all__ = ["Dist", "setup_distributed", "list_inputs", "model_digest", "invert_dataset", "reconstruct_dataset",
           "load_image_latent", "read_manifest", "IMAGE_EXTENSIONS", "DatasetError", "IMAGE_PIXELS_FACTOR"]

#: images with more than this many times the model's trained pixels are recorded as failed before decoding
IMAGE_PIXELS_FACTOR = 16


# --- distributed set-up ------------------------------------------------------------------------
@contextmanager
def _killable() -> Iterator[None]:
    """While blocked in a collective (rendezvous, barrier), torch waits in C++ where a Python SIGTERM
    handler never runs: restore the default action meanwhile, so SIGTERM ends the process. Finished
    shards are safe (written atomically); nothing is in flight during a collective."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: str = "cpu"

    def barrier(self) -> None:
        if self.world > 1:
            with _killable():
                torch.distributed.barrier()


def setup_distributed(device: str | None = None) -> Dist:
    """Rank and world size from the environment ``torchrun`` / ``accelerate launch`` set (RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT; checked first by
    :func:`~.dataset_files.distributed_env`); the process group is started with NCCL on CUDA, gloo on
    CPU. One process without those variables is world size 1. Each rank takes the GPU of its LOCAL_RANK."""
    rank, world, local = distributed_env()
    cuda = torch.cuda.is_available() and device in (None, "cuda")
    dev = f"cuda:{local}" if cuda else (device or "cpu")
    if world > 1 and not torch.distributed.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        with _killable():
            torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, dev)


# --- helpers -------------------------------------------------------------------------------------
def _shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def _write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=1) + "\n").encode())


def _chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for k in range(0, len(seq), n):
        yield seq[k:k + n]


def _positive(name: str, v: Any, none_ok: bool = False) -> None:
    if v is None and none_ok:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if none_ok else ''}, got {v!r}")


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
    # nfe counts network evaluations along one trajectory, the same for every row: not a sum over batches
    return dataclasses.replace(first, window=window, nfe=first.nfe, metadata=metadata)


def _trained_pixels(parts: Any) -> int:
    size = getattr(parts.unet.config, "sample_size", None) or 64
    h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
    return int(h) * int(w) * parts.vae_factor ** 2


def _check_image_size(path: str, parts: Any, max_pixels: int) -> None:
    """Refuse, from the file header (before decoding), an image far larger than the model's trained
    size: the network's memory and time grow with the pixels (a 4000x4000 image on the 8x8 digits model
    would need gigabytes)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # unreadable: load_image gives the precise error
        return
    if w * h > max_pixels:
        side = int(round(_trained_pixels(parts) ** 0.5))
        raise ImageSizeError(f"image {path} is {w}x{h} pixels, more than {max_pixels // _trained_pixels(parts)}x the "
                             f"model's trained size (about {side}x{side}, max_image_pixels={max_pixels}); "
                             "downscale it first")


def _check_prompts(parts: Any, items: Sequence[Item]) -> None:
    """Every distinct prompt must suit the model, before anything is written (a class-conditional model
    takes class labels): the error names the list-file line or the default prompt."""
    seen: set = set()
    for it in items:
        if repr(it.prompt) in seen:
            continue
        seen.add(repr(it.prompt))
        where = "prompt (the default for images without their own)" if it.origin == "prompt" else it.origin
        if is_class_conditional(parts.unet):
            try:
                encode_classes(parts.unet, it.prompt, 1)
            except ValueError as exc:
                raise DatasetError(f"{where}: {exc}") from None
        elif is_conditional(parts.unet) and not isinstance(it.prompt, str):
            raise DatasetError(f"{where}: a text-conditioned model needs a string prompt, got {it.prompt!r}")


def _unchanged(record: dict, path: str) -> bool:
    """The file at ``path`` still holds what ``record`` inverted (size and mtime, else its SHA-256)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if record.get("size_bytes") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns:
        return True
    return "sha256" in record and sha256_file(path) == record["sha256"]


# --- the plan of a run ---------------------------------------------------------------------------
@dataclass
class _Plan:
    kept: dict  #: shard number -> its records (a finished shard whose latent file is intact)
    todo: list  #: (shard number, items) to invert now
    notes: list  #: what a rerun found and does about it, for the summary


def _read_shard(out: Path, k: int) -> tuple[list | None, str]:
    """The records of finished shard k, or None and why it is not usable."""
    rec_file = out / f"{_shard_name(k)}.json"
    try:
        records = read_json(rec_file)
    except DatasetError:
        return None, f"its record file {rec_file.name} is corrupt"
    if not isinstance(records, list) or not all(isinstance(r, dict) and "path" in r for r in records):
        return None, f"its record file {rec_file.name} is corrupt"
    latent = next((r.get("latent_file") for r in records if r.get("latent_file")), None)
    if latent is not None:
        f = out / latent
        if not f.is_file():
            return None, f"its latent file {latent} is missing"
        want = records[0].get("latent_sha256")
        if want is not None and sha256_file(f) != want:
            return None, f"its latent file {latent} is not the one written (SHA-256 differs)"
    return records, ""


def _plan(out: Path, items: list[Item], shard_size: int, resume: bool) -> _Plan:
    """Which shards are finished and intact, and which images to invert into which new shards."""
    kept: dict = {}
    notes: list = []
    broken: list = []
    if resume:
        numbers = sorted(int(p.name[6:11]) for p in out.glob("shard-*.json")
                         if len(p.name) == 16 and p.name[6:11].isdigit())
        for k in numbers:
            records, why = _read_shard(out, k)
            if records is None:
                broken.append(k)
                notes.append(f"shard {k} is re-inverted: {why}")
            else:
                kept[k] = records
    done: dict = {}  # real path -> (shard, record) of the latest finished record of each image
    for k in sorted(kept):
        for r in kept[k]:
            done[os.path.realpath(resolve_path(r["path"], out, r.get("format")))] = (k, r)
    pending, changed = [], 0
    for it in items:
        hit = done.get(os.path.realpath(it.path))
        if hit is None:
            pending.append(it)
        elif not _unchanged(hit[1], it.path):
            pending.append(it)
            changed += 1
    if resume and pending:
        left = len(pending) - changed
        if left:
            notes.append(f"{left} image(s) without a finished latent (new, or in unfinished or re-inverted shards) "
                         "are inverted now")
    if changed:
        notes.append(f"{changed} image(s) whose file changed since it was inverted are inverted again")
    free = (k for k in itertools.count() if k not in kept)  # a resumed run numbers its shards as a clean run would
    todo = [(next(free), list(chunk)) for chunk in _chunks(pending, shard_size)]
    return _Plan(kept, todo, notes)


# --- inversion -----------------------------------------------------------------------------------
def invert_dataset(
    pipe: Any,
    source: "str | os.PathLike",
    out: "str | os.PathLike",
    *,
    prompt: Any = "",
    prompt_from_folder: bool = False,
    settings: InversionSettings | None = None,
    guidance_scale: float = 1.0,
    batch_size: int | None = None,
    shard_size: int = 64,
    model: str = "",
    max_image_pixels: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    dist: Dist | None = None,
    **options: Any,
) -> dict:
    """Invert every image of ``source`` into shards under ``out`` (see the module docstring).

    ``settings`` / keywords: the :class:`~.settings.InversionSettings` fields ``num_steps`` (50),
    ``method`` ('obelm', a name), ``mode``, ``state_dtype``, ``resize``, ``eval_threads`` (default 1 here:
    a dataset's latents must not depend on the machine's thread count) and ``eval_batch`` (also accepted
    under its former name ``eval_chunk``).

    ``batch_size``: images the sampler advances together (default: as many as one evaluation chunk
    holds); it changes neither the latents nor the network's call size. ``eval_chunk``: rows per
    network call (default :func:`~.adapters.eval_chunk_for` the model; another value gives latents
    with other last bits). ``max_image_pixels``: larger images are recorded as failed before decoding
    (default ``IMAGE_PIXELS_FACTOR`` x the model's trained pixels). ``overwrite``: replace the files of
    an earlier run with other options (or files of the same names) instead of refusing.

    ``prompt_from_folder``: ``source`` is a folder of sub-folders (torchvision's ``ImageFolder`` layout,
    ``source/<prompt>/<image>``) and each image's prompt or class label is its sub-folder's name.

    Returns the summary {images, ok, failed, shards_done, shards_skipped, notes, seconds, images_per_s}
    (``ok`` / ``failed`` count the images of ``source``, ``notes`` what a rerun found and re-did)."""
    if "eval_chunk" in options:  # the former name of eval_batch
        if "eval_batch" in options:
            raise TypeError("give eval_batch or eval_chunk (its former name), not both")
        options = {**{k: v for k, v in options.items() if k != "eval_chunk"}, "eval_batch": options["eval_chunk"]}
    pinned = "eval_threads" in options or (settings is not None and settings.eval_threads is not None)
    s = settings_of("invert_dataset", settings, options, unused=("mode_options", "allow_size_mismatch"))
    num_steps, method, mode, state_dtype, resize = s.steps(50), s.method or "obelm", s.mode, s.state_dtype, s.resize
    eval_threads, eval_chunk = s.eval_threads if pinned else 1, s.eval_batch
    for name, v in (("shard_size", shard_size), ("num_steps", num_steps)):
        _positive(name, v)
    for name, v in (("batch_size", batch_size), ("eval_chunk", eval_chunk), ("max_image_pixels", max_image_pixels)):
        _positive(name, v, none_ok=True)
    out = Path(out)
    if not isinstance(prompt_from_folder, bool):
        raise TypeError(f"prompt_from_folder must be True or False, got {prompt_from_folder!r}")
    items = list_inputs(source, prompt, prompt_from_folder)
    if not items:
        raise DatasetError(f"no images found in {source}")
    src = Path(source)
    check_output_folder(out, [i.path for i in items] + ([] if src.is_dir() else [src]), [src] if src.is_dir() else [])
    dist = dist or setup_distributed()
    parts = parts_of(pipe)
    _check_prompts(parts, items)
    chunk = eval_chunk or eval_chunk_for(parts.unet)
    guided = float(guidance_scale) != 1.0 and (is_conditional(parts.unet) or is_class_conditional(parts.unet))
    batch = batch_size or max(1, chunk // 2 if guided else chunk)  # guidance evaluates each image twice
    max_pixels = max_image_pixels or IMAGE_PIXELS_FACTOR * _trained_pixels(parts)
    digest = model_digest(parts.unet)
    # what the latents depend on; batch size, shard size and world size do not change them
    options = {"prompt": "<sub-folder names>" if prompt_from_folder else prompt, "num_steps": num_steps, "method": str(method), "mode": mode,
               "guidance_scale": float(guidance_scale), "state_dtype": str(state_dtype), "resize": resize,
               "model_digest": digest, "eval_chunk": chunk, "eval_threads": eval_threads}
    resume, wipe = _check_run(out, options, overwrite)
    created_dir = not out.exists()
    plan = _plan(out, items, shard_size, resume)
    dist.barrier()  # every rank has read the folder before anything in it changes
    created_run = False
    if dist.rank == 0:
        if wipe:
            _remove_run_files(out)
        if not resume:
            out.mkdir(parents=True, exist_ok=True)
            _write_json(out / RUN_FILE, options)
            created_run = True
    bar = None
    t0, done = time.time(), 0
    try:  # from here on, a failure before the first shard is written removes what this run created
        dist.barrier()
        mine = [(k, shard) for k, shard in plan.todo if k % dist.world == dist.rank]
        if progress and dist.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(len(s) for _, s in mine), desc=f"inverting (rank 0 of {dist.world})", unit="img")
        sizes = [tuple(r["image_size"]) for rs in plan.kept.values() for r in rs if r.get("image_size")]
        run = _ShardRun(pipe, parts, out, dict(num_steps=num_steps, method=method, mode=mode,
                                               guidance_scale=guidance_scale, state_dtype=state_dtype, eval_batch=chunk,
                                               eval_threads=eval_threads,
                                               allow_size_mismatch=True),  # max_image_pixels is this run's guard
                        resize, batch, max_pixels, model or parts.name, digest, sizes[0] if sizes else None)
        t0 = time.time()
        for k, shard in mine:
            run.invert_shard(k, shard)
            done += 1
            if bar is not None:
                bar.update(len(shard))
                bar.set_postfix(img_s=f"{bar.n / max(time.time() - t0, 1e-9):.1f}")
    except BaseException:
        if created_run and not any(out.glob("shard-*.json")):  # a failed start leaves nothing behind
            (out / RUN_FILE).unlink(missing_ok=True)
            if created_dir and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        raise
    finally:
        if bar is not None:
            bar.close()
    dist.barrier()
    summary = {"images": len(items), "shards_done": done, "shards_skipped": len(plan.kept), "notes": plan.notes,
               "seconds": time.time() - t0}
    if dist.rank == 0:
        manifest = _merge(out, sorted(plan.kept) + sorted(k for k, _ in plan.todo))
        here = {os.path.realpath(it.path) for it in items}
        status = {os.path.realpath(resolve_path(r["path"], out, r.get("format"))): r["status"] for r in manifest}
        summary.update(ok=sum(status.get(p) == "ok" for p in here), failed=sum(status.get(p) == "failed" for p in here))
        summary["images_per_s"] = sum(len(s) for _, s in plan.todo) / max(summary["seconds"], 1e-9)
    dist.barrier()
    return summary


class _ShardRun:
    """Inverts one shard: reads its images, inverts them in batches, writes the latent, then the records."""

    def __init__(self, pipe: Any, parts: Any, out: Path, invert_options: dict, resize: Any, batch: int, max_pixels: int,
                 model: str, digest: str, size: Any) -> None:
        self.pipe, self.parts, self.out, self.options, self.resize = pipe, parts, out, invert_options, resize
        self.batch = batch
        self.max_pixels, self.model, self.digest, self.size = max_pixels, model, digest, size

    def _read(self, item: Item, rec: dict) -> torch.Tensor:
        st = os.stat(item.path)
        rec.update(size_bytes=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha256_file(item.path))
        _check_image_size(item.path, self.parts, self.max_pixels)
        x, _ = to_tensor([load_image(item.path)], self.parts.size_multiple, self.resize, channels=self.parts.channels)
        if self.size is None:
            self.size = tuple(x.shape[-2:])
        if tuple(x.shape[-2:]) != self.size:
            raise ImageSizeError(f"size {tuple(x.shape[-2:])} differs from the dataset's {self.size}; "
                                 "use resize or separate runs")
        rec["image_size"] = list(x.shape[-2:])
        return x

    def invert_shard(self, k: int, shard: Sequence[Item]) -> None:
        records, states = [], []
        for group in _chunks(shard, self.batch):
            good, tensors = [], []
            for item in group:
                rec = {"path": stored_path(item.path, self.out), "format": RECORD_FORMAT, "prompt": item.prompt,
                       "shard": k}
                try:
                    tensors.append(self._read(item, rec))
                    good.append(rec)
                except (OSError, ValueError, TypeError) as exc:
                    rec.update(status="failed", error=f"{type(exc).__name__}: {exc}")
                    records.append(rec)
            if not good:
                continue
            prompts = [r["prompt"] for r in good]
            state = invert(self.pipe, torch.cat(tensors),
                           prompts if len(set(map(repr, prompts))) > 1 else prompts[0], **self.options)
            before = sum(int(s.x.shape[0]) for s in states)
            for j, r in enumerate(good):
                r.update(position=before + j, status="ok")
            states.append(dataclasses.replace(state, metadata={**state.metadata, "prompt": prompts, "batch": None}))
            records.extend(good)
        common: dict = {"latent_file": None, "latent_sha256": None}
        if states:
            state = _concat(states)
            ok = sorted((r for r in records if r.get("status") == "ok"), key=lambda r: r["position"])
            meta = {**states[0].metadata, "model": self.model, "model_digest": self.digest, "image_kind": "pil",
                    "prompt": [r["prompt"] for r in ok], "batch": int(state.x.shape[0]),
                    "images": [r["path"] for r in ok], "images_base": "latent's folder"}
            latent_file = f"{_shard_name(k)}.safetensors"
            save_latent(dataclasses.replace(state, metadata=meta), self.out / latent_file)
            common = {"latent_file": latent_file, "latent_sha256": sha256_file(self.out / latent_file),
                      "method": str(state.method), "fingerprint": state.fingerprint, "mode": state.mode}
        common.update(num_steps=self.options["num_steps"], guidance_scale=float(self.options["guidance_scale"]),
                      model=self.model, model_digest=self.digest, eval_batch=self.options["eval_batch"],
                      eval_threads=self.options["eval_threads"])
        records = [{**r, **common} for r in records]
        _write_json(self.out / f"{_shard_name(k)}.json", records)  # written last: marks the shard done


def _check_run(out: Path, options: dict, overwrite: bool) -> tuple[bool, bool]:
    """(resume, wipe): a run continues only with the options of the run it continues (shards of two
    settings would mix); files of another run, or of no run, are never replaced without ``overwrite``."""
    run_file = out / RUN_FILE
    ours = [p for p in (out.iterdir() if out.is_dir() else []) if p.name in (MANIFEST, RUN_FILE)
            or (p.name.startswith("shard-") and p.suffix in (".json", ".safetensors"))]
    if run_file.is_file():
        before = read_json(run_file)
        before = before if isinstance(before, dict) else {}
        for free in ("source", "batch_size", "shard_size"):  # recorded by older runs; the latents do not depend on them
            before.pop(free, None)
        changed = sorted(k for k in set(before) | set(options) if before.get(k) != options.get(k))
        if not changed:
            return True, False
        if not overwrite:
            raise DatasetError(f"{out} holds a run with other options ({', '.join(changed)} differ: "
                               f"{ {k: before.get(k) for k in changed} } vs { {k: options.get(k) for k in changed} }); "
                               "use another output folder, the same options to resume, or --overwrite (overwrite=True) "
                               "to replace that run")
        return False, True
    if ours and not overwrite:
        raise DatasetError(f"output folder {out} holds {ours[0].name}, not from an invert-dataset run it could resume "
                           f"(no {RUN_FILE}); choose another folder or pass --overwrite (overwrite=True) to replace them")
    return False, bool(ours)


def _remove_run_files(out: Path) -> None:
    for p in out.iterdir():
        if p.name in (MANIFEST, RUN_FILE) or (p.name.startswith("shard-") and p.suffix in (".json", ".safetensors")):
            p.unlink()


def _merge(out: Path, shards: Sequence[int]) -> list[dict]:
    """The manifest: the records of ``shards`` in order, each image once (a later shard's record of an
    image supersedes an earlier one: it was re-inverted because its file changed)."""
    records = []
    for k in shards:
        f = out / f"{_shard_name(k)}.json"
        if f.is_file():
            records.extend(read_json(f))
    last = {os.path.realpath(resolve_path(r["path"], out, r.get("format"))): n for n, r in enumerate(records)}
    records = [r for n, r in enumerate(records)
               if last[os.path.realpath(resolve_path(r["path"], out, r.get("format")))] == n]
    write_atomic(out / MANIFEST, "".join(json.dumps(r) + "\n" for r in records).encode())
    return records


# --- reading latents back ------------------------------------------------------------------------
def _shard_latent(out: Path, record: dict, device: Any, cache: dict | None) -> State:
    name = record["latent_file"]
    if cache is not None and name in cache:
        return cache[name]
    shard = load_latent(out / name, device=device)  # integrity-checked: its "images" list can be trusted
    if cache is not None:
        cache.clear()  # records come shard by shard: keep one
        cache[name] = shard
    return shard


def _checked_row(out: Path, record: dict, shard: State) -> int:
    """The row of ``record``'s image in its shard latent, checked against the latent's own list of
    images (an edited manifest, e.g. swapped positions, would name another image's latent)."""
    j = record["position"]
    names = shard.metadata.get("images")
    where = f"{out / MANIFEST} line {record['line']}" if "line" in record else f"the record of {record['path']}"
    if names is None:
        return j
    if not 0 <= j < len(names):
        raise DatasetError(f"{where}: position {j} is outside {record['latent_file']} ({len(names)} images); "
                           "the manifest is corrupt: rerun invert-dataset on the same folder to rebuild it")
    base = shard.metadata.get("images_base")
    have = resolve_path(names[j], out, RECORD_FORMAT if base else None)
    if os.path.realpath(have) != os.path.realpath(record["path"]):
        raise DatasetError(f"{where}: {record['path']} is listed at position {j} of {record['latent_file']}, but that "
                           f"row is the latent of {have}; the manifest was edited or mixed up: rerun "
                           "invert-dataset on the same folder to rebuild it")
    return j


def _check_against_shard_records(out: Path, records: Sequence[dict]) -> None:
    """Before anything is written: each manifest entry must be its shard's own record of that position
    (same image, same content hash). The shard latent's own list is checked again when it is loaded."""
    shards: dict = {}
    for r in records:
        k = r["shard"]
        if k not in shards:
            f = out / f"{_shard_name(k)}.json"
            shards[k] = {x.get("position"): x for x in read_json(f)} if f.is_file() else None
        own = shards[k]
        if own is None:
            continue  # the latent file's own list decides
        mine = own.get(r["position"])
        have = None if mine is None else resolve_path(mine["path"], out, mine.get("format"))
        if have is None or os.path.realpath(have) != os.path.realpath(r["path"]) or mine.get("sha256") != r.get("sha256"):
            raise DatasetError(f"{out / MANIFEST} line {r.get('line', '?')}: {r['path']} is listed at position "
                               f"{r['position']} of {r['latent_file']}, but that row is the latent of {have} (shard "
                               f"record {_shard_name(k)}.json); the manifest was edited or mixed up: rerun "
                               "invert-dataset on the same folder to rebuild it")


def load_image_latent(out: "str | os.PathLike", record: "dict | str", device: Any = None,
                      _cache: dict | None = None) -> State:
    """The latent of one image (a manifest record, or its path), ready for :func:`reconstruct` / ``edit``
    (which then returns a PIL image, as the image was a file). The record is checked against the shard's
    own list of images."""
    out = Path(out)
    if isinstance(record, (str, os.PathLike)):
        want = os.path.realpath(record)
        matches = [r for r in read_manifest(out) if os.path.realpath(r["path"]) == want]
        if not matches:
            raise KeyError(f"{record} is not in the manifest of {out}")
        record = matches[0]
    if record.get("status") != "ok":
        raise ValueError(f"{record['path']} was not inverted: {record.get('error')}")
    shard = _shard_latent(out, record, device, _cache)
    one = take_rows(shard, [_checked_row(out, record, shard)])  # window rows, per-row prompts and 'bits' digests
    meta = {**one.metadata, "images": [record["path"]]}
    meta.pop("images_base", None)
    meta.setdefault("image_kind", "pil")  # older shards recorded 'pt': the images were files all the same
    if meta["image_kind"] == "pt":
        meta["image_kind"] = "pil"
    return dataclasses.replace(one, metadata=meta)


# --- reconstruction ------------------------------------------------------------------------------
def reconstruct_dataset(
    pipe: Any,
    latents: "str | os.PathLike",
    out: "str | os.PathLike",
    *,
    batch_size: int | None = None,
    verify: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    dist: Dist | None = None,
) -> dict:
    """Reconstruct every inverted image of ``latents`` into ``out`` as PNG files named by manifest
    order and original name (``000003_cat.png``), in batches of ``batch_size`` images (any size: the
    latents record how the network was evaluated). ``out`` may not lie inside ``latents`` nor hold an
    original image; existing files are refused unless ``overwrite``. With ``verify``, compare each
    reconstruction with its original file.

    Returns {images, files (the paths written), seconds, max_abs_error (in [-1, 1] units; None without
    verify), differing (images of mode 'bits', exact by design, whose reconstruction is not the original's
    pixels; None without verify)}."""
    _positive("batch_size", batch_size, none_ok=True)
    latents, out = Path(latents), Path(out)
    records = [r for r in read_manifest(latents) if r.get("status") == "ok"]
    check_output_folder(out, [r["path"] for r in records], [latents])
    names = output_names(records)
    check_outputs_free(out, names, overwrite)
    _check_against_shard_records(latents, records)
    dist = dist or setup_distributed()
    parts = parts_of(pipe)
    digest = model_digest(parts.unet)
    other = {r["model_digest"] for r in records} - {digest}
    if other:
        raise ValueError(f"these latents were inverted with another model (weights digest {sorted(other)}, this "
                         f"model {digest}); reconstruct with the same model")
    out.mkdir(parents=True, exist_ok=True)
    mine = [(n, r) for n, r in enumerate(records) if r["shard"] % dist.world == dist.rank]
    t0, worst, files, differing = time.time(), 0.0, [], []
    cache: dict = {}
    for group in _groups(mine, batch_size):
        states = [load_image_latent(latents, r, _cache=cache) for _, r in group]
        state = _concat(states)
        state = dataclasses.replace(state, metadata={**state.metadata, "prompt": [r["prompt"] for _, r in group],
                                                     "batch": len(group), "images": [r["path"] for _, r in group]})
        images = reconstruct(pipe, state, output_type="pil", progress=False).images
        for (n, r), img in zip(group, images):
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            write_atomic(out / names[n], buf.getvalue())
            files.append(str(out / names[n]))
            if verify:
                ref, _ = to_tensor([load_image(r["path"])], parts.size_multiple, None, channels=parts.channels)
                back, _ = to_tensor([img], parts.size_multiple, None, channels=parts.channels)
                err = float((back - ref).abs().max()) if back.shape == ref.shape else float("inf")
                worst = max(worst, err)
                if err != 0 and r.get("mode") == "bits":  # exact by design: a difference is a fault
                    differing.append(r["path"])
    dist.barrier()
    return {"images": len(files), "files": files, "seconds": time.time() - t0,
            "max_abs_error": worst if verify else None, "differing": differing if verify else None}


def _groups(mine: list, batch_size: int | None) -> Iterator[list]:
    """Consecutive records that can be reconstructed together (the same evaluation settings), at most
    ``batch_size`` (default: the recorded evaluation chunk) at a time."""
    key = None
    group: list = []
    for n, r in mine:
        k = (r.get("eval_batch"), r.get("eval_threads"), r.get("fingerprint"), r.get("method"), r.get("mode"),
             r.get("guidance_scale"))
        size = batch_size or r.get("eval_batch") or 8
        if group and (k != key or len(group) >= size):
            yield group
            group = []
        key = k
        group.append((n, r))
    if group:
        yield group
