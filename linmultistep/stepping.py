"""One step at a time: the explicit run state, the single-step API and the one integration loop.

:func:`integrate` (and through it :func:`~linmultistep.sample`, :func:`~linmultistep.invert`,
:func:`~linmultistep.solve`) is a loop over :func:`step`; the diffusers schedulers call
:func:`step` once per pipeline call. A :class:`Run` holds everything a run knows -- the form
(a method in a mode), the direction, the window of entries, the step context, and the mode's own
per-run state (``run.state``: the shear tables, fixed-point scales and checksums, passed into
every step) -- so a run can be stepped, inspected and finished by anyone holding it:

>>> import numpy as np
>>> from linmultistep import Grid, get_method
>>> from linmultistep.stepping import start, step, finish
>>> grid = Grid.from_sigmabar(np.linspace(0.0, 2.0, 6))
>>> run = start(lambda x, i: 0.5 * x, grid, "obelm", np.ones(3), "forward")
>>> while not run.done:
...     info = step(run)
>>> window = finish(run)
>>> sorted(window), info.method, run.ctx.nfe
([0, 1], 'obelm', 5)
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, NamedTuple

from .arrays import check_interval, get_backend
from .context import StepContext
from .entries import Entry
from .errors import GridError, NonFiniteError
from .forms import Form, StateProbes, as_form
from .guards import RoundingMeter, rounding_meter
from .methods import Method
from .modes import resolve_mode

__all__ = ["Run", "StepInfo", "Direction", "start", "start_on", "step", "finish", "records", "integrate",
           "progress_label"]

Direction = Literal["forward", "backward"]
_LABELS = {"forward": "sampling", "backward": "inverting"}


class StepInfo(NamedTuple):
    """What one step did (passed to callbacks)."""

    index: int  # grid index just produced
    entry: Any  # its entry (.x is the array the network sees at that point)
    direction: Direction
    method: str  # name of the method (or starter) that made the step
    exact: bool  # False for an approximate inverse step (DDIM inversion)
    nfe: int  # network evaluations so far in this run
    step: int  # 1-based count of steps in this run
    total: int  # steps this run will take


@dataclass
class Run:
    """The explicit state of one run: ``step`` reads and advances it, nothing else is hidden.

    ``form`` is the method in its mode; ``state`` the mode's per-run state (None in mode 'recurrence');
    ``window`` maps grid index -> entry (consecutive indices, at most k of them after each step);
    ``stop`` is the last grid index the run produces; ``count`` the steps made so far.
    """

    ctx: StepContext
    form: Form
    direction: Direction
    window: dict[int, Entry]
    stop: int
    state: Any = None
    count: int = 0
    total: int = 0
    probes: StateProbes = "every"
    meter: "RoundingMeter | None" = None  # the float round trip's expected error (guards.RoundingMeter)
    # True when no one outside the run sees its entries before they leave the window (integrate without a
    # callback, a scheduler): a step may then update the arrays of the entry it reads in place
    private: bool = False
    guarded: bool = True  # the form's steps run inside its guard (False: the guard does nothing, skip it)

    @property
    def method(self) -> Form:
        """The form (kept under its earlier name)."""
        return self.form

    @property
    def next_index(self) -> int:
        """The grid index the next step produces."""
        return min(self.window) - 1 if self.direction == "forward" else max(self.window) + 1

    @property
    def done(self) -> bool:
        return (self.next_index < self.stop) if self.direction == "forward" else (self.next_index > self.stop)

    def __repr__(self) -> str:
        return (f"<Run {self.form.spec} mode={self.form.mode!r} {self.direction} at "
                f"{sorted(self.window)} -> {self.stop}, step {self.count}/{self.total}, nfe={self.ctx.nfe}>")


def start_on(ctx: StepContext, method: "Form | Method", window: dict[int, Any], direction: Direction, stop: int,
             metadata: Mapping[str, Any] | None = None) -> Run:
    """A run of ``method`` (a form; a plain method runs its recurrence) on a prepared context from
    ``window`` (entries or plain arrays) to ``stop``. ``metadata``: what the latent being continued
    recorded (mode 'bits' checks its per-step digests)."""
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    form = as_form(method)
    idx = sorted(window)
    if not idx or idx != list(range(idx[0], idx[-1] + 1)):
        raise GridError(f"a run starts from consecutive grid indices, got {idx}")
    N = len(ctx.h) - 1
    for name, value in (("an index of the start window", idx[0]), ("an index of the start window", idx[-1]),
                        ("stop", stop)):
        if isinstance(value, bool) or not hasattr(value, "__index__") or not 0 <= int(value) <= N:
            raise GridError(f"{name} must be a grid index in 0..N = {N} of this grid, got {value!r}")
    form.check_run(ctx, direction, window)
    if ctx.check_every is None:
        first = next(iter(window.values()))
        ctx.check_every = check_interval(ctx.backend, first[0] if isinstance(first, tuple) else first)
    with form.guard(ctx):
        state, entries = form.begin(ctx, direction, window, metadata)
    total = (idx[0] - stop) if direction == "forward" else (stop - idx[-1])
    meter = rounding_meter(form, ctx, direction, window)
    return Run(ctx, form, direction, entries, int(stop), state, 0, max(total, 0), form.probes(ctx, state), meter,
               guarded=type(form).guard is not Form.guard)


def start(
    field: Callable[[Any, int], Any],
    grid: Any,
    method: "str | Method | Form",
    x: Any,
    direction: Direction,
    *,
    stop: int | None = None,
    check_finite: bool = True,
) -> Run:
    """A run on a diffusion :class:`~linmultistep.Grid` from one array ``x`` (at the noise end
    for ``'forward'``, at the data end for ``'backward'``) to ``stop`` (default: the other end)."""
    form = resolve_mode(method)
    top = grid.N if direction == "forward" else 0
    stop = (0 if direction == "forward" else grid.N) if stop is None else stop

    def describe(i: int) -> str:
        t = grid.timestep(i)
        return f"timestep {t:g}" if not math.isnan(t) else "clean point"

    ctx = StepContext(grid.h, grid.alpha, field, get_backend(x), check_finite, describe)
    return start_on(ctx, form, {top: x}, direction, stop)


def step(run: Run) -> StepInfo:
    """Make the run's next step: produce the entry at ``run.next_index`` with the form's step (the
    arithmetic: :meth:`Form.forward` / :meth:`Form.backward`), trim the window to k points, record the
    deferred checks (read every ``ctx.check_every`` steps)."""
    ctx, form, window, K, forward = run.ctx, run.form, run.window, run.form.k, run.direction == "forward"
    n = min(window) - 1 if forward else max(window) + 1  # run.next_index, read once
    if (n < run.stop) if forward else (n > run.stop):
        raise GridError(f"the run has reached its stop (grid index {run.stop}); nothing to step")
    # a form may update arrays its run made in place, unless someone outside the run can see them; the
    # last step leaves the final window (the run's result) intact
    ctx.may_overwrite = run.private and run.count < run.total - 1
    make = form.forward if forward else form.backward
    if run.guarded:
        with form.guard(ctx):
            made = make(ctx, run.state, n, window)
    else:
        made = make(ctx, run.state, n, window)
    lo, hi = (n, n + K - 1) if forward else (n - K + 1, n)
    entry = window[n] = made.entry
    run.count += 1
    if run.meter is not None:
        run.meter.add(n, entry.x)
    due = ctx.due(run.count)
    if ctx.check_finite:
        if run.probes == "every" or (run.probes == "due" and (due or n == run.stop)):  # n == stop: the last
            ctx.watch_state(n, entry.x, (run.direction, made.by))
        elif run.probes == "due":
            ctx.keep_state(n, entry.x, (run.direction, made.by))
    if len(window) > K:
        for j in [j for j in window if j < lo or j > hi]:
            del window[j]
    ctx.forget_outside(lo, hi)
    if due:
        ctx.check()
    return StepInfo(n, entry, run.direction, made.by.name, made.exact, ctx.nfe, run.count, run.total)


def finish(run: Run) -> "dict[int, Entry]":
    """End the run: complete an open last entry (modes 'stable'/'bits' inverting stopped before the
    noise end), read the pending checks, and check every part of the final window exactly.
    Returns the window as a dict (grid index -> entry)."""
    ctx = run.ctx
    if run.direction == "backward" and run.window:
        with run.form.guard(ctx):
            run.form.close(ctx, run.state, max(run.window), run.window)
    ctx.probe_kept()
    ctx.check()
    if ctx.check_finite:
        for n, e in run.window.items():
            for name, part in zip(e._fields, e):
                if part is not None and not ctx.backend.all_finite(part):
                    raise NonFiniteError(f"part {name!r} of the state at grid index {n} ({ctx.describe(n)}) is NaN "
                                         "or infinite at the end of the run: rounding errors grew past the "
                                         "floating-point range (docs/precision.md)")
    if run.meter is not None:
        meter, run.meter = run.meter, None  # once per run, even if finish is called again
        meter.report()
    return run.window


def records(run: Run) -> dict[str, Any]:
    """What a finished run records in its latent besides the window (mode 'bits': per-step digests)."""
    return run.form.records(run.ctx, run.state)


def progress_label(method: "Form | Method", direction: str) -> str:
    """What a progress bar says: 'sampling (obelm, stable)', 'inverting (edict)'."""
    form = as_form(method)
    mode = "" if form.mode == "recurrence" else f", {form.mode}"
    return f"{_LABELS.get(direction, direction)} ({form.spec}{mode})"


def integrate(
    ctx: StepContext,
    method: "Form | Method",
    window: dict[int, Any],
    direction: Direction,
    stop: int,
    *,
    callback: Callable[[StepInfo], Any] | None = None,
    progress: bool | dict = False,
    metadata: Mapping[str, Any] | None = None,
) -> Run:
    """Advance ``window`` (grid index -> entry or array, consecutive indices) to grid index ``stop``:
    the one loop over :func:`step`, with progress and callbacks.

    ``forward`` produces indices min(window)-1 down to ``stop``; ``backward`` produces
    max(window)+1 up to ``stop``. Returns the finished :class:`Run`, whose ``window`` holds the last
    ``k`` points (fewer only if the run never had that many). The input window is not modified.
    ``metadata``: what the latent being continued recorded.
    """
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(info) or None, got {callback!r} "
                        f"({type(callback).__name__})")
    run = start_on(ctx, method, window, direction, stop, metadata)
    run.private = callback is None  # the steps' entries reach no one else
    bar = None
    if progress:
        from tqdm.auto import tqdm

        opts = {"desc": progress_label(run.form, direction), **(progress if isinstance(progress, dict) else {})}
        bar = tqdm(total=run.total, **opts)
    try:
        run_context = getattr(ctx.backend, "run_context", None)  # e.g. torch: no autograd graph
        with run.form.guard(ctx), (run_context() if run_context else contextlib.nullcontext()):
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
