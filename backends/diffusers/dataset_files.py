"""The files of the dataset commands, without torch: inputs, output-folder rules, the manifest and the
distributed environment. The command line checks all of this before it loads a model.

Rules (docs/datasets.md):

- a dataset command never writes into an input folder: its output folder may neither lie inside a
  folder it reads, nor hold any file it reads (an image, the list file, a latents folder's files);
- it never replaces a file it did not write in the same run without ``overwrite``;
- manifest paths are stored relative to the manifest's own folder (``"format": 2`` in each record), so
  the folder can be moved or read from anywhere; records without ``format`` (older runs) hold the path
  as it was given, relative to that run's working directory, and are read as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["DatasetError", "Item", "IMAGE_EXTENSIONS", "MANIFEST", "RUN_FILE", "RECORD_FORMAT", "distributed_env",
           "list_inputs", "check_output_folder", "stored_path", "resolve_path", "read_json", "read_json_lines",
           "read_manifest", "sha256_file", "output_names", "check_outputs_free"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MANIFEST = "manifest.jsonl"
RUN_FILE = "run.json"
RECORD_FORMAT = 2  # paths relative to the manifest's folder


class DatasetError(ValueError):
    """A dataset folder, file or environment that cannot work; the message names it."""


# --- the distributed environment -----------------------------------------------------------------
def _env_int(environ: Mapping[str, str], name: str, default: int, what: str) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise DatasetError(f"environment variable {name}={raw!r} is not an integer ({what})") from None


def distributed_env(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) from RANK, WORLD_SIZE, LOCAL_RANK (as ``torchrun`` and
    ``accelerate launch`` set them; unset: one process), refused up front when they cannot describe a
    run: WORLD_SIZE < 1, RANK outside 0 .. WORLD_SIZE - 1 (such a rank would wait for the others
    forever, or do nothing), LOCAL_RANK < 0."""
    environ = os.environ if environ is None else environ
    world = _env_int(environ, "WORLD_SIZE", 1, "the number of processes")
    rank = _env_int(environ, "RANK", 0, "this process's rank, 0 .. WORLD_SIZE - 1")
    local = _env_int(environ, "LOCAL_RANK", 0, "this process's rank on its machine")
    if world < 1:
        raise DatasetError(f"environment variable WORLD_SIZE={world} must be at least 1 (the number of processes)")
    if not 0 <= rank < world:
        raise DatasetError(f"environment variable RANK={rank} is outside 0 .. {world - 1} for WORLD_SIZE={world}: "
                           "each of the WORLD_SIZE processes needs its own rank (torchrun and accelerate launch set both)")
    if local < 0:
        raise DatasetError(f"environment variable LOCAL_RANK={local} must be at least 0")
    return rank, world, local


# --- inputs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One image to invert: its path (as found), its prompt, and where that prompt came from."""

    path: str
    prompt: Any = None
    origin: str = "prompt"  #: 'prompt' (the default prompt) or 'FILE line N' (a list file's own)


def list_inputs(source: "str | os.PathLike", prompt: Any = None, from_folder: bool = False) -> list[Item]:
    """The images of a folder (recursive, sorted) or of a list file (``path`` or ``path<TAB>prompt``
    per line; relative paths from the list file's folder; blank and '#' lines skipped).

    ``from_folder``: the folder is laid out as torchvision's ``ImageFolder`` (``source/<name>/<image>``) and
    each image's prompt (or class label) is the name of its sub-folder; an image elsewhere (at the top, or
    deeper) is refused by name, and so is a list file."""
    src = Path(source)
    if from_folder and not src.is_dir():
        raise DatasetError(f"prompts from folder names need a folder of sub-folders (source/<prompt>/<image>); "
                           f"{src} is not a folder")
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not from_folder:
            return [Item(str(p), prompt) for p in files]
        misplaced = [str(p) for p in files if len(p.relative_to(src).parts) != 2]
        if misplaced:
            raise DatasetError(f"prompts from folder names: every image must sit in a sub-folder of {src} named by its "
                               f"prompt (source/<prompt>/<image>); not so: {', '.join(misplaced[:3])}"
                               + (f" and {len(misplaced) - 3} more" if len(misplaced) > 3 else ""))
        return [Item(str(p), p.parent.name, f"folder {p.parent}") for p in files]
    if src.is_file():
        try:
            text = src.read_text()
        except UnicodeDecodeError:
            raise DatasetError(f"dataset list file {src} is not text (give a folder of images, or a list file with "
                               "one path[TAB]prompt per line)") from None
        items = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            path, tab, own = line.partition("\t")
            p = Path(path.strip())
            full = str(p if p.is_absolute() else src.parent / p)
            own = own.strip()
            items.append(Item(full, own, f"{src} line {n}") if tab and own else Item(full, prompt))
        return items
    raise FileNotFoundError(f"dataset source not found: {src} (give a folder of images or a list file)")


def sha256_file(path: "str | os.PathLike") -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- output folders ------------------------------------------------------------------------------
def _real(p: "str | os.PathLike") -> Path:
    return Path(os.path.realpath(p))  # symlinks followed: a link to an input folder is that folder


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_folder(out: "str | os.PathLike", files: Sequence["str | os.PathLike"],
                        folders: Sequence["str | os.PathLike"] = ()) -> None:
    """Refuse an output folder that lies inside one of the input ``folders`` or holds one of the input
    ``files`` (at any depth): a dataset command never writes where it reads."""
    o = _real(out)
    for f in folders:
        if _within(o, _real(f)):
            raise DatasetError(f"output folder {out} is inside the input folder {f}: the dataset commands never write "
                               "into a folder they read; choose an output folder outside it")
    for f in files:
        if _within(_real(f), o):
            raise DatasetError(f"output folder {out} holds the input {f}: the dataset commands never write into a "
                               "folder they read; choose another output folder")


def output_names(records: Sequence[dict]) -> list[str]:
    """The file name of each reconstructed image: its manifest number and its original stem."""
    return [f"{n:06d}_{Path(r['path']).stem}.png" for n, r in enumerate(records)]


def check_outputs_free(out: "str | os.PathLike", names: Sequence[str], overwrite: bool) -> None:
    """Refuse to replace existing files unless ``overwrite``."""
    if overwrite:
        return
    taken = [n for n in names if (Path(out) / n).exists()]
    if taken:
        more = f" and {len(taken) - 3} more" if len(taken) > 3 else ""
        raise DatasetError(f"output folder {out} already holds {len(taken)} of the files to write "
                           f"({', '.join(taken[:3])}{more}); pass --overwrite (overwrite=True) to replace them, or "
                           "choose another folder")


# --- manifest paths ------------------------------------------------------------------------------
def stored_path(path: "str | os.PathLike", folder: "str | os.PathLike") -> str:
    """``path`` as a manifest in ``folder`` stores it: relative to that folder (absolute where no
    relative path exists, e.g. another drive)."""
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(folder))).as_posix()
    except ValueError:
        return os.path.abspath(path)


def resolve_path(stored: str, folder: "str | os.PathLike", fmt: Any) -> str:
    """A stored manifest path as a path usable from here (see the module docstring for ``fmt``)."""
    if fmt is None or os.path.isabs(stored):
        return stored  # an older run: relative to its own working directory
    return os.path.normpath(os.path.join(folder, stored))


# --- JSON files ----------------------------------------------------------------------------------
def read_json(path: "str | os.PathLike") -> Any:
    """A JSON file; a corrupt one is a :class:`DatasetError` naming the file and the place."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); it is corrupt: restore or delete it") from None


def read_json_lines(path: "str | os.PathLike") -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line of a JSON-lines file; a line that is not a JSON
    object is a :class:`DatasetError` naming the file and the line."""
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not a text file; it is corrupt") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} line {n} is not valid JSON ({exc.msg} at column {exc.colno}); "
                               "the manifest is corrupt: rerun invert-dataset on the same folder to rebuild it") from None
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            raise DatasetError(f"{path} line {n} is not a manifest record (a JSON object with a 'path')")
        rows.append((n, row))
    return rows


_REQUIRED_OK = ("latent_file", "position", "shard", "model_digest")


def read_manifest(out: "str | os.PathLike") -> list[dict]:
    """The records of an ``invert_dataset`` output folder, in manifest order, each ``path`` usable
    from the current directory, and ``line`` its line in the manifest (for messages)."""
    f = Path(out) / MANIFEST
    if not f.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {out}: not an invert-dataset output folder, or its run did not finish")
    records = []
    for n, r in read_json_lines(f):
        if r.get("status") == "ok":
            missing = [k for k in _REQUIRED_OK if k not in r]
            if missing or isinstance(r["position"], bool) or not isinstance(r["position"], int):
                raise DatasetError(f"{f} line {n}: the record of {r['path']} lacks "
                                   f"{', '.join(missing) if missing else 'an integer position'}; the manifest is corrupt")
        records.append({**r, "path": resolve_path(r["path"], out, r.get("format")), "line": n})
    return records
