"""Inverted latents on disk: one safetensors file with the whole window and its identity.

Tensors: ``State.named_arrays()``: ``x[i]`` for every grid index i of the window, ``y[i]`` for EDICT's coupled
entries, and the form's own variables in modes "stable" (``xbar[i]``, ``v[i]``) and "bits"; e.g.
``x[50]``, ``x[49]`` for O-BELM at 50 steps in mode "recurrence". String metadata (safetensors
header ``__metadata__``):

- ``format``: ``linmultistep-latent/1``
- ``method``: method name; ``params``: JSON list of [name, value] pairs (e.g. ``[["gamma", 1.0]]``)
- ``fingerprint``: the grid fingerprint; ``mode``; ``nfe``
- ``info``: JSON of :attr:`State.metadata` (model, prompt, negative prompt, guidance scale,
  num_steps, prediction type, timestep spacing, image kind and size, ...)
- ``dtypes``: JSON {tensor name: dtype} of the stored tensors, checked against the file's tensors and
  against what the mode holds (int64 fixed-point parts in mode 'bits', one floating dtype otherwise)
- ``digest``: JSON {field: sha256} of every other metadata field and of the tensors (names, dtypes,
  shapes and bytes), checked by :func:`load_latent`: an edited field or a flipped bit is refused,
  naming what changed. A file without a digest is refused, naming the file; files written before
  digests existed are read with ``load_latent(path, allow_legacy=True)`` (unchecked, with a warning).

A mode-'bits' latent's ``info`` also holds ``environment``: where it was inverted (torch version, CPU
capability or GPU, dtype, threads, a probe of the network's output; :mod:`.environment`), which
:func:`~.pipeline.reconstruct` compares before the run. Every ``info`` field a reconstruction uses is
checked when the file is read, so that a crafted value is reported as the file's field.

Files are written atomically: to a temporary file in the target directory, flushed and
fsync'ed, then moved over the target with ``os.replace`` (a crash never leaves half a file).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
import secrets
import stat
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save as _save_bytes

from linmultistep import MethodSpec, State
from linmultistep.caller import outside_stacklevel
from linmultistep.fixedpoint import DIGESTS_KEY

#: metadata fields that hold one value per image of the batch (when they are lists of batch length)
PER_ROW_FIELDS = ("prompt", "negative_prompt", "input_sizes", "images")

__all__ = ["save_latent", "load_latent", "take_rows", "FORMAT"]

FORMAT = "linmultistep-latent/1"


def take_rows(state: State, rows: Sequence[int]) -> State:
    """The latent of some images of a batch: those rows of every window array, with the per-image
    metadata (prompts, original sizes, file names, mode 'bits' digests) selected alike; the exact
    latent of each image on its own."""
    batch = int(state.x.shape[0])
    idx = [int(r) for r in rows]
    if not idx or any(not 0 <= r < batch for r in idx):
        raise ValueError(f"rows must be a non-empty list of indices in [0, {batch}), got {list(rows)!r}")

    def pick(a: Any) -> Any:
        return None if a is None else a[idx]

    window = {i: type(e)(*(pick(part) for part in e)) for i, e in state.window.items()}
    meta = dict(state.metadata)
    for key in PER_ROW_FIELDS:
        if isinstance(meta.get(key), list) and len(meta[key]) == batch:
            meta[key] = [meta[key][r] for r in idx]
    if DIGESTS_KEY in meta:  # one checksum per batch row and step
        meta[DIGESTS_KEY] = {k: [v[r] for r in idx] for k, v in meta[DIGESTS_KEY].items()}
    if "batch" in meta:
        meta["batch"] = len(idx)
    return dataclasses.replace(state, window=window, metadata=meta)


def save_latent(state: State, path: "str | os.PathLike") -> Path:
    """Write ``state`` (from :func:`invert`) to ``path`` atomically; returns the path."""
    if not isinstance(state, State):
        raise TypeError(f"expected a linmultistep State, got {type(state).__name__}")
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state.named_arrays().items()}
    meta = {
        "format": FORMAT,
        "method": state.method.name,
        "params": json.dumps([[k, v] for k, v in state.method.params]),
        "fingerprint": state.fingerprint,
        "mode": state.mode,
        "nfe": str(int(state.nfe)),
        "info": json.dumps(dict(state.metadata)),
        "dtypes": json.dumps({name: str(t.dtype).replace("torch.", "") for name, t in sorted(tensors.items())}),
    }
    meta["digest"] = json.dumps(_digests(meta, tensors), sort_keys=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, _save_bytes(tensors, metadata=meta))
    return path


def _digests(meta: dict, tensors: dict) -> dict:
    """{metadata field: sha256 of its value, 'tensors': sha256 of every tensor's name, dtype, shape, bytes}."""
    out = {k: hashlib.sha256(str(v).encode()).hexdigest()[:16] for k, v in meta.items() if k != "digest"}
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    out["tensors"] = h.hexdigest()[:16]
    return out


def _remove_stale_temporaries(path: Path) -> None:
    """Temporaries of ``path`` left by a write whose process was killed (SIGKILL cannot be caught):
    their names carry the writer's pid; remove those whose writer is gone."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            pid = int(tmp.name[len(path.name) + 2:].split(".", 1)[0])
            os.kill(pid, 0)  # raises if no such process
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, OSError):
            continue  # not ours, or a live writer of another user (PermissionError)


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new file ``.NAME.PID.RANDOM.tmp`` beside ``path``, opened for writing, created with mode 0o666
    so that the kernel applies the umask (``mkstemp`` would make it 0600)."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it and rename it over ``path``: a crash
    or an interrupt leaves either the old file or the new one, and no temporary behind.

    A symlink is written through (its target is replaced, the link kept); an existing file keeps its
    permission bits, a new one gets the usual ``0o666 & ~umask``. Temporaries of killed writers
    (their pid is in the name) are removed on the next write."""
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    _remove_stale_temporaries(path)
    keep = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if keep is not None:
                os.fchmod(fh.fileno(), keep)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_latent(path: "str | os.PathLike", device: "str | torch.device | None" = None, *,
                allow_legacy: bool = False) -> State:
    """Read a latent written by :func:`save_latent` (tensors moved to ``device`` if given).

    The integrity digest is mandatory: a file without one is refused unless ``allow_legacy=True``
    (files written before digests existed; read unchecked, with a warning)."""
    if not isinstance(allow_legacy, bool):
        raise TypeError(f"allow_legacy must be True or False, got {allow_legacy!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latent file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a linmultistep latent (format {meta.get('format')!r}, expected {FORMAT!r})")
    if "digest" not in meta:
        if not allow_legacy:
            raise ValueError(f"{path} has no integrity digest (metadata field 'digest'): it was written before digests "
                             "existed or the field was removed, so edits and flipped bits cannot be detected; pass "
                             "allow_legacy=True to read it unchecked")
        warnings.warn(f"{path}: reading a latent without integrity digest (allow_legacy=True): edits and flipped "
                      "bits in it cannot be detected", UserWarning, stacklevel=outside_stacklevel())
    else:
        try:
            recorded = json.loads(meta["digest"])
        except json.JSONDecodeError:
            raise ValueError(f"{path}: the integrity digest field is not valid JSON") from None
        now = _digests(meta, tensors)
        changed = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
        if changed:
            what = ", ".join("tensor data" if k == "tensors" else f"metadata field {k!r}" for k in changed)
            raise ValueError(f"{path}: integrity digest does not match ({what} changed after the file was written); "
                             "the latent cannot be trusted to reconstruct its images")
    missing = [k for k in ("method", "params", "fingerprint", "mode", "nfe", "info") if k not in meta]
    if missing:
        raise ValueError(f"{path}: latent metadata lacks the field(s) {', '.join(missing)}")
    params, nfe, info = _parse_fields(path, meta)
    _check_dtypes(path, meta, tensors)
    if device is not None:
        tensors = {name: t.to(device) for name, t in tensors.items()}
    spec = MethodSpec(meta["method"], params)
    try:
        return State.from_named_arrays(tensors, spec, meta["fingerprint"], meta["mode"], nfe, info)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path}: {exc}") from None


#: bounds on what a latent file may claim, checked before anything is built from it
MAX_RECORDED_STEPS = 100_000


def _parse_fields(path: Path, meta: dict) -> tuple[tuple, int, dict]:
    """params, nfe and info of a latent file, each checked: a malformed or crafted field is refused
    naming the file and the field (never a JSONDecodeError or a truncated number)."""

    def field(name: str) -> Any:
        try:
            return json.loads(meta[name])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: metadata field {name!r} is not valid JSON ({exc.msg})") from None

    params = field("params")
    if not isinstance(params, list) or not all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], (int, float, str, bool))
        for p in params
    ):
        raise ValueError(f"{path}: metadata field 'params' must be a list of [name, value] pairs, got {meta['params']!r}")
    nfe = field("nfe")
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 0:
        raise ValueError(f"{path}: metadata field 'nfe' must be a non-negative integer, got {meta['nfe']!r}")
    info = field("info")
    if not isinstance(info, dict):
        raise ValueError(f"{path}: metadata field 'info' must be a JSON object, got {type(info).__name__}")
    steps = info.get("num_steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_RECORDED_STEPS):
        raise ValueError(f"{path}: metadata field 'info.num_steps' must be an integer in [1, {MAX_RECORDED_STEPS}], "
                         f"got {steps!r}")
    for name in ("batch", "eval_batch", "eval_threads"):
        v = info.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{path}: metadata field 'info.{name}' must be a positive integer, got {v!r}")
    for name, why in _info_problems(info):
        raise ValueError(f"{path}: metadata field 'info.{name}' {why}")
    return tuple((k, v) for k, v in params), nfe, info


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_size(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_is_int(n) and n >= 1 for n in v)


def _is_prompt(v: Any) -> bool:
    """Text, a class label, or one of those per image (what :func:`~.pipeline.invert` records)."""
    def one(p: Any) -> bool:
        return isinstance(p, str) or _is_int(p)
    return v is None or one(v) or (isinstance(v, list) and all(one(p) for p in v))


def _info_problems(info: dict) -> list[tuple[str, str]]:
    """(field, what is wrong) for every ``info`` field a reconstruction reads whose recorded value it could not
    use: each is reported as the file's field, never later as an argument of the call it feeds
    (e.g. an unknown 'image_kind' would surface as a bad ``output_type``)."""
    from .adapters import PREDICTION_TYPES
    from .environment import ENVIRONMENT_KEY, validate_record

    checks: dict[str, tuple[Any, str]] = {
        "model": (lambda v: isinstance(v, str), "must be a string"),
        "method": (lambda v: isinstance(v, str), "must be a string"),
        "model_digest": (lambda v: isinstance(v, str), "must be a string"),
        "prompt": (_is_prompt, "must be text, a class label, or a list of them"),
        "negative_prompt": (lambda v: v is None or isinstance(v, str) or (isinstance(v, list) and all(
            isinstance(p, str) for p in v)), "must be text or a list of texts"),
        "guidance_scale": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                           "must be a finite number"),
        "prediction_type": (lambda v: v in PREDICTION_TYPES, f"must be one of {list(PREDICTION_TYPES)}"),
        "timestep_spacing": (lambda v: isinstance(v, str), "must be a string"),
        "steps_offset": (lambda v: _is_int(v) and v >= 0, "must be a non-negative integer"),
        "set_alpha_to_one": (lambda v: isinstance(v, bool), "must be true or false"),
        "vae_sample": (lambda v: isinstance(v, bool), "must be true or false"),
        "image_kind": (lambda v: v in ("pil", "pt"), "must be 'pil' or 'pt'"),
        "image_size": (_is_size, "must be [height, width] with positive integers"),
        "input_sizes": (lambda v: isinstance(v, list) and all(_is_size(sz) for sz in v),
                        "must be a list of [height, width] pairs"),
        DIGESTS_KEY: (lambda v: isinstance(v, dict) and all(
            isinstance(k, str) and k.lstrip("-").isdigit() and isinstance(r, list) and all(_is_int(c) for c in r)
            for k, r in v.items()), "must map grid indices to lists of integer checksums"),
    }
    out = [(k, f"{why}, got {info[k]!r:.80}") for k, (ok, why) in checks.items() if k in info and not ok(info[k])]
    if ENVIRONMENT_KEY in info:
        why = validate_record(info[ENVIRONMENT_KEY])
        if why is not None:
            out.append((ENVIRONMENT_KEY, why))
    return out


#: the integer parts of mode 'bits' (fixed-point state and increments); every other part is floating point
_INTEGER_PARTS = ("X", "V", "dV")


def _check_dtypes(path: Path, meta: dict, tensors: dict) -> None:
    """The stored tensors' dtypes against the recorded ``dtypes`` field and against the mode: int64 for the
    fixed-point parts of mode 'bits', one real floating dtype for every other part (a state stored as
    integers or in two precisions would be read as another latent)."""
    if "dtypes" in meta:
        try:
            recorded = json.loads(meta["dtypes"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: metadata field 'dtypes' is not valid JSON ({exc.msg})") from None
        if not isinstance(recorded, dict):
            raise ValueError(f"{path}: metadata field 'dtypes' must be a JSON object, got {type(recorded).__name__}")
        stored = {name: str(t.dtype).replace("torch.", "") for name, t in tensors.items()}
        if set(recorded) != set(stored):
            raise ValueError(f"{path}: the file holds tensors {sorted(stored)} but its metadata field 'dtypes' lists "
                             f"{sorted(recorded)}")
        bad = [f"{n} is {stored[n]}, recorded {recorded[n]!r}" for n in sorted(stored) if recorded[n] != stored[n]]
        if bad:
            raise ValueError(f"{path}: stored tensor dtypes differ from the metadata field 'dtypes': {'; '.join(bad)}")
    bits = str(meta.get("mode", "")).startswith("bits")
    floats = set()
    for name, t in sorted(tensors.items()):
        part = name.split("[", 1)[0]
        if bits and part in _INTEGER_PARTS:
            if t.dtype != torch.int64:
                raise ValueError(f"{path}: tensor {name!r} of mode 'bits' must be int64 (fixed point), got {t.dtype}")
        elif not t.dtype.is_floating_point or t.dtype.is_complex:
            raise ValueError(f"{path}: tensor {name!r} must be a real floating-point state, got {t.dtype}")
        else:
            floats.add(t.dtype)
    if len(floats) > 1:
        raise ValueError(f"{path}: the state's tensors are stored in several dtypes "
                         f"({', '.join(sorted(str(d) for d in floats))}); a latent has one state dtype")
