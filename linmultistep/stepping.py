"""One step at a time: the explicit run state and the single-step API.

:func:`integrate` (and through it :func:`~linmultistep.sample`, :func:`~linmultistep.invert`,
:func:`~linmultistep.solve`) is a loop over :func:`step`; the diffusers schedulers call
:func:`step` once per pipeline call. A :class:`Run` holds everything a run knows -- the
method, the direction, the window of entries, the step context with the method's prepared
data -- so a run can be stepped, inspected and finished by anyone holding it:

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

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, NamedTuple

from .arrays import check_interval, get_backend
from .context import StepContext
from .entries import Entry
from .errors import GridError, MethodError, NonFiniteError
from .methods import Method, StateProbes
from .modes import resolve_mode

__all__ = ["Run", "StepInfo", "Direction", "start", "start_on", "step", "finish"]

Direction = Literal["forward", "backward"]


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

    ``window`` maps grid index -> entry (consecutive indices, at most k of them after each step);
    ``stop`` is the last grid index the run produces; ``count`` the steps made so far.
    """

    ctx: StepContext
    method: Method
    direction: Direction
    window: dict[int, Entry]
    stop: int
    count: int = 0
    total: int = 0
    chain: list = field(default_factory=list)  # the method and its starters, longest window first
    probes: StateProbes = "every"  # Method.state_probes of this run

    @property
    def next_index(self) -> int:
        """The grid index the next step produces."""
        return min(self.window) - 1 if self.direction == "forward" else max(self.window) + 1

    @property
    def done(self) -> bool:
        return (self.next_index < self.stop) if self.direction == "forward" else (self.next_index > self.stop)

    def __repr__(self) -> str:
        return (f"<Run {self.method.spec} mode={self.method.mode!r} {self.direction} at "
                f"{sorted(self.window)} -> {self.stop}, step {self.count}/{self.total}, nfe={self.ctx.nfe}>")


def start_on(ctx: StepContext, method: Method, window: dict[int, Any], direction: Direction, stop: int) -> Run:
    """A run of ``method`` on a prepared context from ``window`` (entries or plain arrays) to ``stop``."""
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    idx = sorted(window)
    if not idx or idx != list(range(idx[0], idx[-1] + 1)):
        raise GridError(f"a run starts from consecutive grid indices, got {idx}")
    ctx.prepared = method.prepare(ctx, direction, window)
    if ctx.check_every is None:
        first = next(iter(window.values()))
        ctx.check_every = check_interval(ctx.backend, first[0] if isinstance(first, tuple) else first)
    with method.guard(ctx):
        entries = method.enter(ctx, dict(window))
    total = (idx[0] - stop) if direction == "forward" else (stop - idx[-1])
    return Run(ctx, method, direction, entries, int(stop), 0, max(total, 0), method.chain(), method.state_probes(ctx))


def start(
    field: Callable[[Any, int], Any],
    grid: Any,
    method: "str | Method",
    x: Any,
    direction: Direction,
    *,
    stop: int | None = None,
    check_finite: bool = True,
) -> Run:
    """A run on a diffusion :class:`~linmultistep.Grid` from one array ``x`` (at the noise end
    for ``'forward'``, at the data end for ``'backward'``) to ``stop`` (default: the other end)."""
    m = resolve_mode(method)
    top = grid.N if direction == "forward" else 0
    stop = (0 if direction == "forward" else grid.N) if stop is None else stop

    def describe(i: int) -> str:
        t = grid.timestep(i)
        return f"timestep {t:g}" if not math.isnan(t) else "clean point"

    ctx = StepContext(grid.h, grid.alpha, field, get_backend(x), check_finite, describe)
    return start_on(ctx, m, {top: x}, direction, stop)


def _pick(run: Run, have: int) -> Method:
    for m in run.chain:
        if m.k <= have:
            return m
    raise MethodError(f"no method in the starter chain of {run.method.spec} can step from {have} point(s)")


def step(run: Run) -> StepInfo:
    """Make the run's next step: produce the entry at ``run.next_index``, trim the window to the
    method's k points, record the deferred checks (read every ``ctx.check_every`` steps)."""
    if run.done:
        raise GridError(f"the run has reached its stop (grid index {run.stop}); nothing to step")
    ctx, method, window, K = run.ctx, run.method, run.window, run.method.k
    n = run.next_index
    have = len(window)  # consecutive points next to n: the window never holds anything else
    m = _pick(run, have)
    with method.guard(ctx):
        if run.direction == "forward":
            exact = True
            entry = m.forward(ctx, n, window)
            lo, hi = n, n + K - 1
        else:
            exact = m.exact_backward(ctx, n)
            entry = m.backward(ctx, n, window)
            lo, hi = n - K + 1, n
    window[n] = entry
    run.count += 1
    if run.probes == "every" or (run.probes == "due" and (ctx.due(run.count) or run.done)):
        ctx.watch_state(n, entry.x, (run.direction, m))
    elif run.probes == "due":
        ctx.keep_state(n, entry.x, (run.direction, m))
    if len(window) > K:
        for j in [j for j in window if j < lo or j > hi]:
            del window[j]
    ctx.forget_outside(lo, hi)
    if ctx.due(run.count):
        ctx.check()
    return StepInfo(n, entry, run.direction, m.spec.name, exact, ctx.nfe, run.count, run.total)


def finish(run: Run) -> "Any":
    """End the run: complete an open last entry (modes 'stable'/'bits' inverting stopped before the
    noise end), read the pending checks, and check every part of the final window exactly.
    Returns the window as a dict (grid index -> entry)."""
    ctx = run.ctx
    if run.direction == "backward" and run.window:
        with run.method.guard(ctx):
            run.method.close(ctx, max(run.window), run.window)
    ctx.probe_kept()
    ctx.check()
    if ctx.check_finite:
        for n, e in run.window.items():
            for name, part in zip(e._fields, e):
                if part is not None and not ctx.backend.all_finite(part):
                    raise NonFiniteError(f"part {name!r} of the state at grid index {n} ({ctx.describe(n)}) is NaN "
                                         "or infinite at the end of the run: rounding errors grew past the "
                                         "floating-point range (docs/precision.md)")
    return run.window
