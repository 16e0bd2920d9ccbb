"""The one integration loop of linmultistep: a loop over :func:`~linmultistep.stepping.step`.

Every method in every direction runs through :func:`integrate`; the loop adds progress and
callbacks to what :mod:`linmultistep.stepping` does. Sampling (``forward``) goes from high to
low grid index, inversion (``backward``) from low to high; both use the paper's indexing.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping

from .context import StepContext
from .methods import Method
from .stepping import Direction, Run, StepInfo, finish, start_on, step

__all__ = ["StepContext", "StepInfo", "integrate", "Direction", "progress_label"]

_LABELS = {"forward": "sampling", "backward": "inverting"}


def progress_label(method: Method, direction: str) -> str:
    """What a progress bar says: 'sampling (obelm, stable)', 'inverting (edict)'."""
    mode = "" if method.mode == "recurrence" else f", {method.mode}"
    return f"{_LABELS.get(direction, direction)} ({method.spec}{mode})"


def integrate(
    ctx: StepContext,
    method: Method,
    window: dict[int, Any],
    direction: Direction,
    stop: int,
    *,
    callback: Callable[[StepInfo], Any] | None = None,
    progress: bool | dict = False,
    metadata: Mapping[str, Any] | None = None,
) -> Run:
    """Advance ``window`` (grid index -> entry or array, consecutive indices) to grid index ``stop``.

    ``forward`` produces indices min(window)-1 down to ``stop``; ``backward`` produces
    max(window)+1 up to ``stop``. Returns the finished :class:`~linmultistep.stepping.Run`, whose
    ``window`` holds the last ``method.k`` points (fewer only if the run never had that many).
    The input window is not modified. ``metadata``: what the latent being
    continued recorded (mode 'bits' checks its per-step digests).
    """
    run = start_on(ctx, method, window, direction, stop)
    if metadata:
        method.use_latent_metadata(ctx, metadata)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        opts = {"desc": progress_label(method, direction), **(progress if isinstance(progress, dict) else {})}
        bar = tqdm(total=run.total, **opts)
    try:
        run_context = getattr(ctx.backend, "run_context", None)  # e.g. torch: no autograd graph
        with method.guard(ctx), (run_context() if run_context else contextlib.nullcontext()):
            # (the guard once around the loop: the steps' own guards nest for free)
            while not run.done:
                info = step(run)
                if bar is not None:
                    bar.update(1)
                if callback is not None:
                    callback(info)
            finish(run)
            return run
    finally:
        if bar is not None:
            bar.close()
