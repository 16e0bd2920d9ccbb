"""Exact gradients through a sampler, in memory independent of the number of steps.

``sample(eps_fn, start, grid, method, gradient=...)`` returns x_0 as a torch tensor that autograd
differentiates with respect to the starting noise x_N (or a latent window), and to every tensor in
``params`` that ``eps_fn`` uses (network weights, class or prompt embeddings, a guidance scale).

- ``"autograd"``: the plain unrolled graph of the whole run (the reference; memory O(N) activations).
- ``"checkpoint"``: the forward run keeps only the states; the backward pass recomputes each step's
  graph from them (memory O(N) states, no activations).
- ``"reversible"``: the forward run keeps only the final window. The backward pass walks back up the
  grid rebuilding every state with the method's exact inverse (the core's own inversion steps, one at a
  time, as far as each backward step needs) and differentiates one step at a time: memory independent
  of N. The rebuild's network evaluation at a point builds its graph and is the one the step's graph
  differentiates, so a backward step costs one network evaluation and its backward pass, as
  checkpointing's does. This is what
  EDICT's authors used for latent optimisation and what diffrax's ``ReversibleAdjoint`` does for
  reversible Runge-Kutta methods; here it works for every exactly invertible LM method (O-BELM,
  BDIA, EDICT, belm rules) in every mode. With ``mode='bits'`` the rebuilt states are bit-identical
  to the forward ones, so the gradient is plain autograd's up to the network's own arithmetic.

What is differentiated is the method's recurrence (the map in exact arithmetic): the forms of modes
'stable' and 'bits' compute the same map with other rounding, and an integer state has no
derivative of its own. Each step's vector-Jacobian product is the derivative of the core's own
step function (``Method.forward``) on a differentiable array backend, so nothing of the method is
written twice.

A network that does not give the same outputs when re-run makes the rebuilt states differ from the
forward ones; this is checked, not assumed: in mode 'bits' every network input of the rebuild must
equal the forward run's bit for bit (a digest per grid index), in float modes the rebuilt start must
equal the given one to a tolerance (the rounding of the inverse). Otherwise
:class:`~linmultistep.NondeterministicNetworkError` is raised instead of returning a wrong gradient.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch

import linmultistep as lms
from linmultistep import Grid, Method, MethodError, NondeterministicNetworkError, State
from linmultistep.arrays import get_backend
from linmultistep.context import StepContext
from linmultistep.forms import Form
from linmultistep.modes import base_method, resolve_mode
from linmultistep.stepping import Run, start_on
from linmultistep.stepping import step as core_step

from .torch import TorchBackend

__all__ = ["sample", "GRADIENTS", "Gradient"]

Gradient = Literal["reversible", "checkpoint", "autograd"]
GRADIENTS = ("reversible", "checkpoint", "autograd")


class _GradBackend(TorchBackend):
    """The torch backend with an out-of-place, differentiable linear combination (and a graph)."""

    def run_context(self):
        return contextlib.nullcontext()

    def lincomb(self, coeffs: Sequence[float], arrays: Sequence[torch.Tensor]) -> torch.Tensor:
        out = arrays[0] * float(coeffs[0])
        for c, x in zip(coeffs[1:], arrays[1:]):
            out = out + x * float(c)
        return out


_GRAD = _GradBackend()


def _is_exactly_invertible(method: Method) -> bool:
    if isinstance(method, lms.Edict):
        return True
    return isinstance(method, lms.LinearMultistep) and method.k >= 2 and method.backward_explicit


def _pick(method: Method, have: int) -> Method:
    """The method (or starter) the integrator uses with ``have`` points above the new one."""
    for m in method.chain():
        if m.k <= have:
            return m
    raise MethodError(f"no method in the starter chain of {method.spec} can step from {have} point(s)")


def _parts(entry: Any) -> tuple[torch.Tensor, ...]:
    """The float arrays of a window entry the recurrence reads: x, or EDICT's (x, y) (modes 'stable' /
    'bits': the network's view x_n)."""
    return tuple(entry) if isinstance(entry, lms.Coupled) else (entry.x,)


def _entry(parts: Sequence[torch.Tensor], coupled: bool) -> Any:
    return lms.Coupled(*parts) if coupled else lms.Point(parts[0])


@dataclass
class _Run:
    """One differentiable run: the method, grid, mode and what the chosen strategy keeps."""

    eps_fn: Callable[[torch.Tensor, int], torch.Tensor]
    grid: Grid
    method: Method  # recurrence form
    mode: str
    params: tuple[torch.Tensor, ...]
    gradient: str
    layout: dict[int, tuple[int, ...]] = field(default_factory=dict)  # grid index -> input positions of its parts
    coupled: bool = False
    kept: dict[int, Any] = field(default_factory=dict)  # checkpoint: every state; reversible: the end window
    end_state: State | None = None
    digests: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    start_parts: dict[int, tuple[torch.Tensor, ...]] = field(default_factory=dict)
    graphs: dict[int, tuple] = field(default_factory=dict)  # id(input) -> (input, index, leaf, output)

    # --- the network, as the core sees it ----------------------------------------------------
    def _digest(self, x: torch.Tensor) -> tuple[float, float]:
        flat = x.detach().reshape(-1).double()
        w = torch.cos(torch.arange(flat.numel(), dtype=torch.float64, device=flat.device) * 0.7548776662)
        return float(flat.sum()), float((flat * w).sum())

    def recording(self, store: dict[int, list]) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """The network without a graph; in mode 'bits' each input's digest is recorded (the rebuild is
        checked against them)."""
        bits = self.mode.startswith("bits")

        def eps(x: torch.Tensor, i: int) -> torch.Tensor:
            if bits:
                store.setdefault(i, []).append(self._digest(x))
            with torch.no_grad():
                return self.eps_fn(x, i)

        return eps

    def rebuilding(self, store: dict[int, list]) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """The network for the rebuild: each evaluation builds its graph on a leaf made of its input and is
        kept (by the input's identity) until the step whose graph needs it takes it, so that the rebuild's
        evaluation is the step's own (one network evaluation per step besides the backward pass)."""
        bits = self.mode.startswith("bits")

        def eps(x: torch.Tensor, i: int) -> torch.Tensor:
            if bits:
                store.setdefault(i, []).append(self._digest(x))
            leaf = x.detach().requires_grad_(True)
            with torch.enable_grad():
                out = self.eps_fn(leaf, i)
            self.graphs[id(x)] = (x, i, leaf, out)
            return out.detach()

        return eps

    def _reused(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """The step graph's network call: the rebuild's evaluation on this very leaf, else a new one."""
        for src, j, leaf, out in self.graphs.values():
            if leaf is x and j == i:
                return out
        return self.eps_fn(x, i)

    def context(self) -> StepContext:
        """A step context whose arrays are differentiable and whose field builds a graph."""
        return StepContext(self.grid.h, self.grid.alpha, self._reused, _GRAD, check_finite=False)

    # --- forward -----------------------------------------------------------------------------
    def forward(self, start: dict[int, tuple[torch.Tensor, ...]]) -> torch.Tensor:
        top = max(start)
        window = {i: _entry(p, self.coupled) for i, p in start.items()}
        self.start_parts = {i: tuple(t.detach() for t in p) for i, p in start.items()}
        if self.gradient == "checkpoint":
            kept: dict[int, Any] = {}

            def keep(info: lms.StepInfo) -> None:
                kept[info.index] = tuple(t.detach() for t in _parts(info.entry))

            cb = keep
        else:
            cb = None
        state_start = window[top].x if len(window) == 1 and not self.coupled else self._state(window)
        with torch.no_grad():
            end = lms.sample(self.recording(self.digests), state_start, self.grid, self.method, mode=self.mode,
                             return_state=True, callback=cb)
        self.end_state = end
        if self.gradient == "checkpoint":
            kept.update(self.start_parts)
            self.kept = kept
        return _parts(end.window[0])[0].detach().clone()

    def _state(self, window: Mapping[int, Any]) -> State:
        return State(dict(window), self.method.spec, self.grid.fingerprint, self.mode)

    # --- backward ----------------------------------------------------------------------------
    def backward(self, g0: torch.Tensor) -> tuple[list, list]:
        top = max(self.start_parts)
        grads: dict[int, list[torch.Tensor | None]] = {0: [g0] + [None] * (1 if self.coupled else 0)}
        if self.coupled:  # EDICT returns x; y gets no gradient from the output
            grads[0] = [g0, torch.zeros_like(g0)]
        pgrads: list[torch.Tensor | None] = [None] * len(self.params)
        rebuilt: dict[int, list] = {}
        rebuild = self._rebuild(rebuilt, top) if self.gradient == "reversible" else None
        for n in range(0, min(self.start_parts)):  # the steps the forward run made (not the given window)
            have = min(self.method.k, top - n)
            step = _pick(self.method, have)
            if rebuild is not None:
                need = n + step.k
                with torch.no_grad():  # the core's arithmetic; the network calls build their graphs themselves
                    while max(rebuild.window) < need:
                        core_step(rebuild)
                parts = {p: self._parts_at(rebuild.window, p) for p in range(n + 1, n + step.k + 1)}
            else:
                parts = {p: self.kept[p] for p in range(n + 1, n + step.k + 1)}
            g = grads.pop(n)
            leaves = {p: tuple(self._leaf(t) for t in ps) for p, ps in parts.items()}
            with torch.enable_grad():
                out = step.forward(self.context(), n, {p: _entry(ls, self.coupled) for p, ls in leaves.items()})
                outs = tuple(out)
                pairs = [(o, gi) for o, gi in zip(outs, g) if gi is not None]
                # a frozen tensor among params (requires_grad False) gets no gradient, as in autograd
                live = [j for j, prm in enumerate(self.params) if prm.requires_grad]
                inputs = [t for ls in leaves.values() for t in ls] + [self.params[j] for j in live]
                got = torch.autograd.grad([o for o, _ in pairs], inputs, [gi for _, gi in pairs], allow_unused=True)
            k = 0
            for p, ls in leaves.items():
                acc = grads.setdefault(p, [None] * len(ls))
                for j in range(len(ls)):
                    if got[k] is not None:
                        acc[j] = got[k] if acc[j] is None else acc[j] + got[k]
                    k += 1
            for j, gp in zip(live, got[k:]):
                if gp is not None:
                    pgrads[j] = gp if pgrads[j] is None else pgrads[j] + gp
            # graphs of points at or below n + 1 serve no later step (step m needs points above m)
            self.graphs = {key: gr for key, gr in self.graphs.items() if gr[1] > n + 1}
        self.graphs = {}
        if rebuild is not None:
            with torch.no_grad():
                while not rebuild.done:  # the rest of the given window (checked against it below)
                    core_step(rebuild)
            self.graphs = {}
            self._check_rebuild(rebuild.window, rebuilt, top)
        count = 1 + max(j for idxs in self.layout.values() for j in idxs)
        start_grads: list[torch.Tensor | None] = [None] * count
        for i, idxs in self.layout.items():
            for gg, j in zip(grads.get(i) or [], idxs):
                if gg is not None:  # a tensor used twice (EDICT's x_N = y_N from noise) gets both gradients
                    start_grads[j] = gg if start_grads[j] is None else start_grads[j] + gg
        return start_grads, pgrads

    def _rebuild(self, store: dict[int, list], top: int) -> Run:
        """The inversion that rebuilds the states, from the forward run's end window up to the noise end,
        stepped only as far as each backward step needs (the core's own steps, in the run's mode)."""
        end = self.end_state
        grid = self.grid
        ctx = StepContext(grid.h, grid.alpha, self.rebuilding(store), get_backend(end.x), True,
                          lambda i: f"grid index {i}")
        return start_on(ctx, resolve_mode(self.method, self.mode), dict(end.window), "backward", top, end.metadata)

    def _leaf(self, t: torch.Tensor) -> torch.Tensor:
        """The leaf standing for array t in a step's graph: the one the rebuild evaluated the network on,
        when it did (so its graph is reused), else a new one."""
        got = self.graphs.get(id(t))
        if got is not None and got[0] is t:
            return got[2]
        return t.detach().requires_grad_(True)

    def _parts_at(self, window: Mapping[int, Any], p: int) -> tuple[torch.Tensor, ...]:
        if p in window:
            return _parts(window[p])
        return self.start_parts[p]

    def _check_rebuild(self, window: Mapping[int, Any], rebuilt: dict[int, list], top: int) -> None:
        """The rebuilt run must be the forward run: bit for bit in mode 'bits', to rounding otherwise."""
        if self.mode.startswith("bits"):
            for i, seen in rebuilt.items():
                if not set(seen) <= set(self.digests.get(i, [])):
                    raise NondeterministicNetworkError(
                        f"rebuilding the run for the gradient gave other network inputs at grid index {i} than the "
                        "forward run: the network is not deterministic (mode 'bits' rebuilds states bit for bit)"
                    )
            return
        for i, parts in self.start_parts.items():
            if i not in window:
                continue
            for t, r in zip(parts, _parts(window[i])):
                tol = 1e-3 if t.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-7
                err = float((r.double() - t.double()).norm() / max(float(t.double().norm()), 1e-30))
                if not err <= tol:
                    raise NondeterministicNetworkError(
                        f"rebuilding the run for the gradient gave a start {err:.2e} (relative) away from the given "
                        f"one at grid index {i} (tolerance {tol:g}): the network is not deterministic, or the "
                        "inverse's rounding grew too far (use mode='bits', or gradient='checkpoint')"
                    )


class _Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, run: _Run, count: int, *tensors: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        start = {i: tuple(tensors[j] for j in idxs) for i, idxs in run.layout.items()}
        ctx.run = run
        ctx.count = count
        return run.forward(start)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:  # type: ignore[override]
        start_grads, pgrads = ctx.run.backward(g)
        return (None, None, *start_grads, *pgrads)


def sample(
    eps_fn: Callable[[torch.Tensor, int], torch.Tensor],
    start: "torch.Tensor | Mapping[int, torch.Tensor]",
    grid: Grid,
    method: "str | Method" = "obelm",
    *,
    gradient: Gradient = "reversible",
    mode: str | None = None,
    params: Sequence[torch.Tensor] = (),
) -> torch.Tensor:
    """Differentiable sampling from the noise end to x_0 (see the module docstring).

    ``eps_fn(x, i)``: differentiable noise prediction at grid index i (e.g.
    ``UNetEps(...).eps_with_grad``-based, or any torch function). ``start``: the noise x_N, or a
    latent window {N: x_N, N-1: x_{N-1}} of plain tensors (EDICT: {N: (x_N, y_N)}). ``params``: the
    tensors ``eps_fn`` uses that need gradients (network parameters, embeddings, a guidance scale):
    gradients reach them through ``.grad`` / ``torch.autograd.grad`` as usual. ``mode``: the arithmetic
    of the states ('recurrence', 'stable', 'bits'; None: the core's default).
    """
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    if isinstance(method, Form):
        if method.mode != "recurrence":
            raise MethodError(f"give the method in its recurrence form and the mode as mode= (got {method.spec} in "
                              f"mode {method.mode!r})")
        method = base_method(method)
    m = lms.get_method(method)
    mode = lms.default_mode(m) if mode is None else mode
    if gradient == "reversible" and not _is_exactly_invertible(m):
        raise MethodError(
            f"{m.spec} cannot be inverted exactly, so gradient='reversible' cannot rebuild its states; "
            "use gradient='checkpoint' (memory O(N) states) or 'autograd'"
        )
    params = tuple(params)
    for j, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"params[{j}] must be a tensor, got {type(p).__name__}")
    coupled = isinstance(m, lms.Edict)
    inputs: list[torch.Tensor] = []
    layout: dict[int, tuple[int, ...]] = {}
    if isinstance(start, torch.Tensor):
        inputs, layout = [start], {grid.N: (0, 0) if coupled else (0,)}
    elif isinstance(start, Mapping):
        for i, v in start.items():
            parts = tuple(v) if coupled else (v,)
            if coupled and len(parts) != 2:
                raise ValueError(f"an EDICT window entry is the pair (x, y); got {len(parts)} part(s) at index {i}")
            layout[int(i)] = tuple(range(len(inputs), len(inputs) + len(parts)))
            inputs.extend(parts)
    else:
        raise TypeError(f"start must be a tensor (x_N) or a window {{index: tensor}}, got {type(start).__name__}")
    for t in inputs:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"start arrays must be floating-point tensors, got {getattr(t, 'dtype', type(t).__name__)}")
    if not layout or max(layout) != grid.N or sorted(layout) != list(range(min(layout), grid.N + 1)):
        raise ValueError(f"the start window must be consecutive indices ending at the noise end N = {grid.N}, "
                         f"got {sorted(layout)}")
    window = {i: tuple(inputs[j] for j in idxs) for i, idxs in layout.items()}
    if gradient == "autograd":
        return _unrolled(eps_fn, window, grid, m, mode, coupled)
    run = _Run(eps_fn, grid, m, mode, params, gradient, layout, coupled)
    return _Function.apply(run, len(inputs), *inputs, *params)


def _unrolled(eps_fn, window, grid, method, mode, coupled) -> torch.Tensor:
    """The reference: the core's run of the recurrence on differentiable arrays, one graph."""
    w = {i: _entry(p, coupled) for i, p in window.items()}
    state = w[grid.N].x if len(w) == 1 and not coupled else State(w, method.spec, grid.fingerprint, "recurrence")
    # the finite checks as in the other strategies: a NaN from the network is named, not returned
    return lms.sample(eps_fn, state, grid, method, mode="recurrence", backend=_GRAD)
