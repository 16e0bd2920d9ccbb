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
- ``digest``: JSON {field: sha256} of every other metadata field and of the tensors (names, dtypes,
  shapes and bytes), checked by :func:`load_latent`: an edited field or a flipped bit is refused,
  naming what changed. (Files written before digests existed load without the check.)

Files are written atomically: to a temporary file in the target directory, flushed and
fsync'ed, then moved over the target with ``os.replace`` (a crash never leaves half a file).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as _save_bytes

from linmultistep import MethodSpec, State

__all__ = ["save_latent", "load_latent", "FORMAT"]

FORMAT = "linmultistep-latent/1"


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


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it and rename it over ``path``: a crash
    or an interrupt leaves either the old file or the new one, and no temporary behind."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_batch(path: "str | os.PathLike") -> int:
    """The number of images a latent file holds (1 when it cannot be read: load_latent reports why later)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return int(json.loads((fh.metadata() or {}).get("info", "{}")).get("batch") or 1)
    except Exception:
        return 1


def load_latent(path: "str | os.PathLike", device: "str | torch.device | None" = None) -> State:
    """Read a latent written by :func:`save_latent` (tensors moved to ``device`` if given)."""
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
    if "digest" in meta:
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
    if device is not None:
        tensors = {name: t.to(device) for name, t in tensors.items()}
    spec = MethodSpec(meta["method"], tuple((k, v) for k, v in json.loads(meta["params"])))
    try:
        return State.from_named_arrays(
            tensors, spec, meta["fingerprint"], meta["mode"], int(meta["nfe"]), json.loads(meta["info"])
        )
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
