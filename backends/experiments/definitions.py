"""The seeds' experiments as data: one :class:`Experiment` per table or figure, one list per model.

An experiment names what to run (``kind``), with which samplers in which modes, at which step
counts, guidance scales, state dtypes and sizes, and which measures to take; the runner
(:mod:`.runner`) executes a list on a model and :mod:`.report` writes it up. Adding a table to a
model's report is adding an entry here. Every definition is checked when it is built: a bad one is
refused with the field at fault named.

Kinds and their measures (:mod:`.measures` has the formulas):

- ``reconstruction`` (the seed's Tables 2/3): reconstruct(invert(x)) of held-out images; pixel MSE
  (next to the autoencoder's own round trip, the floor) and latent (model-space) MSE.
- ``generation`` (Table 4): samples from the same seeded noise; judge accuracy per head, Fréchet
  distance of judge features against held-out images, and RMS error against a high-accuracy
  solution of the same probability-flow ODE (O-BELM with ``reference_steps`` steps, float64).
- ``edit``: exact inversion with the source condition, regenerated with a target that changes one
  thing (``changes``: ``digit`` or an attribute) over a ``strengths`` sweep, in each ``variants``
  way; share judged as the target, distance to the source, against a fresh sample of the target.
- ``interpolation``: spherical interpolation between the exact latents of two held-out images;
  endpoint error (t = 0, 1 must give the images' latents back).
- ``samplers`` (issue 23): the samplers users pick instead, driven by the model's own network from the
  same seeded noise at few steps: diffusers' ``DDIMScheduler``, ``EulerDiscreteScheduler``,
  ``DPMSolverMultistepScheduler`` (DPM-Solver++ 2M) and ``UniPCMultistepScheduler`` against the library's
  DDIM and O-BELM (:mod:`linmultistep.analysis.sampler_comparison`, sampler names :data:`COMPARED`); RMS
  error of the final latent against a ``reference_steps`` solution of the probability-flow ODE, with
  fitted orders, its own error (half the steps; ``reference_cross``: DPM-Solver++ 2M at the same steps)
  and the judge's digit accuracy. On a flow model (velocity prediction on the rectified-flow path) the
  samplers are diffusers' flow variants (:data:`FLOW_ONLY`: DPM-Solver++ 2M and UniPC with
  ``prediction_type='flow_prediction'``, ``FlowMatchEulerDiscreteScheduler``) and the library's Euler
  (method ``ddim``) and O-BELM, all on the model's own sigmas
  (:mod:`linmultistep.analysis.flow_sampler_comparison`); a variance-preserving scheduler on a flow model,
  or a flow variant on a UNet, is refused by the runner.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

__all__ = ["Sampler", "EditVariant", "Experiment", "KINDS", "MEASURES", "METHODS", "MODES", "DTYPES",
           "definitions_for", "DIGITS_SAMPLERS", "GENERATORS", "COMPARED", "COMPARED_SAMPLERS",
           "FLOW_COMPARED", "FLOW_ONLY"]

KINDS = ("reconstruction", "generation", "edit", "interpolation", "samplers")
MEASURES: dict[str, tuple[str, ...]] = {
    "reconstruction": ("pixel_mse", "latent_mse", "ae_floor"),
    "generation": ("accuracy", "frechet", "reference_error"),
    "edit": ("target_share", "source_distance"),
    "interpolation": ("endpoint_error",),
    "samplers": ("reference_error", "reference_cross", "accuracy"),
}
METHODS = ("ddim", "edict", "bdia", "obelm")
#: the samplers of kind ``samplers``: linmultistep.analysis.sampler_comparison.SAMPLERS's names (a test
#: keeps the two equal; spelled out here so that the definitions import no torch)
COMPARED = ("ddim-diffusers", "euler", "dpm++2m", "unipc", "ddim", "obelm")
#: diffusers' flow-matching samplers (FLOW_SAMPLERS's names less the library's ddim and obelm, which serve both)
FLOW_ONLY = ("flow-dpm++2m", "flow-unipc", "flow-euler")
MODES = (None, "recurrence", "stable", "bits")
DTYPES = ("float32", "float64")
EDIT_CHANGES = ("digit", "thickness", "width", "slant", "prompt")  # prompt: to a given target prompt


@dataclass(frozen=True)
class Sampler:
    """A table column: ``label`` for ``method`` run in ``mode`` (None: the core's default mode)."""

    label: str
    method: str
    mode: "str | None" = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"Sampler.label must be a non-empty string, got {self.label!r}")
        if self.method not in METHODS + COMPARED + FLOW_ONLY:
            raise ValueError(f"Sampler.method of {self.label!r} must be one of {METHODS} (or, in a samplers "
                             f"experiment, of {COMPARED + FLOW_ONLY}), got {self.method!r}")
        if self.mode not in MODES:
            raise ValueError(f"Sampler.mode of {self.label!r} must be one of {MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class EditVariant:
    """One way of editing: Direct Inversion on or off, and Prompt-to-Prompt's cross-attention
    injection (share of the sampled steps, None: off)."""

    label: str
    direct_inversion: bool = False
    cross_attention_steps: "float | None" = None

    def __post_init__(self) -> None:
        if not isinstance(self.direct_inversion, bool):
            raise ValueError(f"EditVariant.direct_inversion of {self.label!r} must be a bool, got {self.direct_inversion!r}")
        c = self.cross_attention_steps
        if c is not None and not (isinstance(c, (int, float)) and 0.0 <= float(c) <= 1.0):
            raise ValueError(f"EditVariant.cross_attention_steps of {self.label!r} must be in [0, 1] or None, got {c!r}")


@dataclass(frozen=True)
class Experiment:
    """One table or figure of a report (see the module docstring for ``kind`` and ``measures``)."""

    name: str
    kind: str
    samplers: tuple[Sampler, ...]
    steps: tuple[int, ...]
    guidance: tuple[float, ...] = (1.0,)
    dtypes: tuple[str, ...] = ("float32",)
    images: int = 0                        # held-out images (reconstruction, edit; interpolation: a pair)
    samples: int = 0                       # generation: samples per seed
    seeds: tuple[int, ...] = (0,)
    reference_steps: int = 0               # generation: steps of the high-accuracy solution
    reference_method: str = "obelm"        # generation: its method (Euler = "ddim" on flow grids, where O-BELM samples badly)
    strengths: tuple[float, ...] = ()      # edit
    variants: tuple[EditVariant, ...] = ()  # edit
    changes: tuple[str, ...] = ()          # edit: what the target changes
    measures: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def bad(field: str, value: object, expected: str) -> ValueError:
            return ValueError(f"experiment {self.name!r}: {field} must be {expected}, got {value!r}")

        if self.kind not in KINDS:
            raise bad("kind", self.kind, f"one of {KINDS}")
        if not self.samplers or not all(isinstance(s, Sampler) for s in self.samplers):
            raise bad("samplers", self.samplers, "a non-empty tuple of Sampler")
        if len({s.label for s in self.samplers}) != len(self.samplers):
            raise bad("samplers", [s.label for s in self.samplers], "samplers with distinct labels")
        methods = COMPARED + FLOW_ONLY if self.kind == "samplers" else METHODS
        if not all(s.method in methods for s in self.samplers):
            raise bad("samplers", [s.method for s in self.samplers], f"methods from {methods} for kind {self.kind!r}")
        if not self.steps or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 2 for n in self.steps):
            raise bad("steps", self.steps, "a non-empty tuple of integers >= 2")
        if not self.guidance or not all(isinstance(w, (int, float)) and w >= 1.0 for w in self.guidance):
            raise bad("guidance", self.guidance, "a non-empty tuple of numbers >= 1")
        if not self.dtypes or not set(self.dtypes) <= set(DTYPES):
            raise bad("dtypes", self.dtypes, f"a non-empty tuple from {DTYPES}")
        unknown = [m for m in self.measures if m not in MEASURES[self.kind]]
        if not self.measures or unknown:
            raise bad("measures", self.measures, f"a non-empty tuple from {MEASURES[self.kind]} for kind {self.kind!r}")
        if self.kind in ("reconstruction", "edit") and self.images < 1:
            raise bad("images", self.images, "a positive count")
        if self.kind == "interpolation" and self.images != 2:
            raise bad("images", self.images, "2 (the interpolation's pair)")
        if self.reference_method not in METHODS:
            raise bad("reference_method", self.reference_method, f"one of {METHODS}")
        if self.kind == "generation":
            if self.samples < 2:
                raise bad("samples", self.samples, "at least 2 (a Fréchet distance needs a covariance)")
            if not self.seeds:
                raise bad("seeds", self.seeds, "a non-empty tuple")
            if "reference_error" in self.measures and self.reference_steps < 2 * max(self.steps):
                raise bad("reference_steps", self.reference_steps, f"at least twice the largest step count ({max(self.steps)})")
        if self.kind == "samplers":
            if any(s.mode is not None for s in self.samplers):
                raise bad("samplers", [s.mode for s in self.samplers], "samplers in their default mode (mode None)")
            if "reference_error" not in self.measures:
                raise bad("measures", self.measures, "a tuple with 'reference_error' (the comparison's measure)")
            if self.samples < 1:
                raise bad("samples", self.samples, "a positive count")
            if len(self.seeds) != 1:
                raise bad("seeds", self.seeds, "one seed (the fitted orders are per noise)")
            if self.dtypes != ("float64",):
                raise bad("dtypes", self.dtypes, "('float64',) (the comparison runs float64 states)")
            if len(self.guidance) != 1:
                raise bad("guidance", self.guidance, "one guidance scale")
            vp_only = [s.method for s in self.samplers if s.method in COMPARED and s.method not in ("ddim", "obelm")]
            flow_only = [s.method for s in self.samplers if s.method in FLOW_ONLY]
            if vp_only and flow_only:
                raise bad("samplers", vp_only + flow_only, "the variance-preserving schedulers or their flow variants "
                          "(flow-*), not both (a model is one or the other)")
            if self.reference_steps < 2 * max(self.steps) or self.reference_steps % 2:
                raise bad("reference_steps", self.reference_steps,
                          f"an even count at least twice the largest step count ({max(self.steps)})")
        if self.kind == "edit":
            if not self.strengths or not all(0.0 < float(s) <= 1.0 for s in self.strengths):
                raise bad("strengths", self.strengths, "a non-empty tuple of numbers in (0, 1]")
            if not self.variants or not all(isinstance(v, EditVariant) for v in self.variants):
                raise bad("variants", self.variants, "a non-empty tuple of EditVariant")
            if not self.changes or not set(self.changes) <= set(EDIT_CHANGES):
                raise bad("changes", self.changes, f"a non-empty tuple from {EDIT_CHANGES}")
            if len(self.steps) != 1 or len(self.guidance) != 1:
                raise bad("steps/guidance", (self.steps, self.guidance), "one step count and one guidance scale")

    def replace(self, **changes: object) -> "Experiment":
        return dataclasses.replace(self, **changes)


# --- the samplers ---------------------------------------------------------------------------------
DIGITS_SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DDIM", "ddim", "recurrence"),
    Sampler("EDICT", "edict", "recurrence"),
    Sampler("BDIA", "bdia", "recurrence"),
    Sampler("BDIA stable", "bdia", "stable"),
    Sampler("BDIA bits", "bdia", "bits"),
    Sampler("O-BELM", "obelm", "recurrence"),
    Sampler("O-BELM stable", "obelm", "stable"),
    Sampler("O-BELM bits", "obelm", "bits"),
)
GENERATORS: tuple[Sampler, ...] = (Sampler("DDIM", "ddim"), Sampler("EDICT", "edict"), Sampler("BDIA", "bdia"),
                                   Sampler("O-BELM", "obelm"))
GENERATORS_RECURRENCE: tuple[Sampler, ...] = tuple(Sampler(s.label, s.method, "recurrence") for s in GENERATORS)
FLOW_SAMPLERS: tuple[Sampler, ...] = (
    Sampler("Euler", "ddim", "recurrence"),
    Sampler("O-BELM", "obelm", "recurrence"),
    Sampler("O-BELM stable", "obelm", "stable"),
    Sampler("O-BELM bits", "obelm", "bits"),
)
FLOW_GENERATORS: tuple[Sampler, ...] = (Sampler("Euler", "ddim"), Sampler("O-BELM", "obelm"))
#: diffusers' schedulers and the library's DDIM and O-BELM (kind samplers), in the table order of docs/samplers.md
COMPARED_SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DDIMScheduler", "ddim-diffusers"), Sampler("Euler", "euler"), Sampler("DPM-Solver++ 2M", "dpm++2m"),
    Sampler("UniPC", "unipc"), Sampler("DDIM", "ddim"), Sampler("O-BELM", "obelm"))
#: a flow model: diffusers' flow variants of DPM-Solver++ 2M and UniPC, its FlowMatchEulerDiscreteScheduler,
#: and the library's Euler (= that scheduler step for step) and O-BELM, all on the model's own sigmas
FLOW_COMPARED: tuple[Sampler, ...] = (
    Sampler("DPM-Solver++ 2M (flow)", "flow-dpm++2m"), Sampler("UniPC (flow)", "flow-unipc"),
    Sampler("FlowMatchEuler", "flow-euler"), Sampler("Euler", "ddim"), Sampler("O-BELM", "obelm"))
# 16 samples from seed 0, N = 5, 10, 20 against a 500-step O-BELM reference (docs/samplers.md's benchmark setting)
SAMPLERS_AT = dict(steps=(5, 10, 20), dtypes=("float64",), samples=16, seeds=(0,), reference_steps=500,
                   measures=("reference_error", "reference_cross", "accuracy"))
PLAIN = EditVariant("plain", direct_inversion=False)
DIRECT = EditVariant("direct inversion", direct_inversion=True)
P2P = EditVariant("prompt-to-prompt", direct_inversion=False, cross_attention_steps=0.4)
RECON = ("pixel_mse", "latent_mse", "ae_floor")
GEN = ("accuracy", "frechet", "reference_error")
EDIT = ("target_share", "source_distance")


def _digits(quick: bool) -> list[Experiment]:
    if quick:
        return [
            Experiment("reconstruction", "reconstruction", DIGITS_SAMPLERS, (10, 50), (1.0, 2.0), ("float32",),
                       images=50, measures=("pixel_mse",)),
            Experiment("editing", "edit", (Sampler("O-BELM", "obelm"),), (50,), (2.0,), images=20, strengths=(0.6, 1.0),
                       variants=(PLAIN, DIRECT), changes=("digit",), measures=EDIT),
            Experiment("interpolation", "interpolation", GENERATORS, (50,), images=2, measures=("endpoint_error",)),
        ]
    return [
        Experiment("reconstruction", "reconstruction", DIGITS_SAMPLERS, (10, 20, 50, 100), (1.0, 2.0), DTYPES,
                   images=50, measures=("pixel_mse",)),
        Experiment("generation", "generation", GENERATORS, (10, 20, 50), (2.0,), ("float64",), samples=200,
                   seeds=(0, 1, 2), reference_steps=500, measures=GEN),
        Experiment("editing", "edit", (Sampler("O-BELM", "obelm"),), (50,), (2.0,), images=50,
                   strengths=(0.2, 0.4, 0.6, 0.8, 1.0), variants=(PLAIN, DIRECT), changes=("digit",), measures=EDIT),
        Experiment("interpolation", "interpolation", GENERATORS, (50,), images=2, measures=("endpoint_error",)),
        Experiment("samplers", "samplers", COMPARED_SAMPLERS, guidance=(2.0,), **SAMPLERS_AT),
    ]


def _mnist_sd(quick: bool) -> list[Experiment]:
    if quick:
        return [
            Experiment("reconstruction", "reconstruction", (DIGITS_SAMPLERS[0], DIGITS_SAMPLERS[5], DIGITS_SAMPLERS[7]),
                       (10,), (1.0, 3.0), ("float32",), images=8, measures=RECON),
            Experiment("editing", "edit", (Sampler("O-BELM", "obelm"),), (20,), (3.0,), images=4, strengths=(0.6, 1.0),
                       variants=(PLAIN,), changes=("digit",), measures=EDIT),
        ]
    return [
        Experiment("reconstruction", "reconstruction", DIGITS_SAMPLERS, (10, 20, 50, 100), (1.0, 3.0), ("float32",),
                   images=10, measures=RECON),
        # float64 states: the modes' float32 bookkeeping is moot, one column per method
        Experiment("reconstruction, float64 states", "reconstruction", GENERATORS_RECURRENCE, (10, 20, 50, 100),
                   (1.0, 3.0), ("float64",), images=10, measures=RECON),
        Experiment("generation", "generation", GENERATORS, (10, 20, 50), (3.0,), ("float64",), samples=50,
                   seeds=(0, 1, 2), reference_steps=200, measures=GEN),
        Experiment("editing the digit", "edit", (Sampler("O-BELM", "obelm"),), (50,), (3.0,), images=20,
                   strengths=(0.4, 0.6, 0.8, 1.0), variants=(PLAIN, DIRECT, P2P), changes=("digit",), measures=EDIT),
        Experiment("editing an attribute", "edit", (Sampler("O-BELM", "obelm"),), (50,), (3.0,), images=20,
                   strengths=(0.4, 0.6, 0.8, 1.0), variants=(PLAIN, DIRECT, P2P), changes=("thickness",), measures=EDIT),
        Experiment("interpolation", "interpolation", (GENERATORS[0], GENERATORS[3]), (50,), images=2,
                   measures=("endpoint_error",)),
        Experiment("samplers", "samplers", COMPARED_SAMPLERS, guidance=(3.0,), **SAMPLERS_AT),
    ]


def _mnist_flow(quick: bool) -> list[Experiment]:
    if quick:
        return [
            Experiment("reconstruction", "reconstruction", (FLOW_SAMPLERS[0], FLOW_SAMPLERS[3]), (10,), (1.0, 3.0),
                       ("float32",), images=8, measures=RECON),
        ]
    return [
        Experiment("reconstruction", "reconstruction", FLOW_SAMPLERS, (10, 20, 50, 100), (1.0, 3.0), ("float32",),
                   images=10, measures=RECON),
        Experiment("reconstruction, float64 states", "reconstruction", FLOW_SAMPLERS[:2], (10, 20, 50, 100),
                   (1.0, 3.0), ("float64",), images=10, measures=RECON),
        # reference: Euler with many steps (O-BELM extrapolates on SD3's shifted grid, docs/flow.md)
        Experiment("generation", "generation", FLOW_GENERATORS, (10, 20, 50), (3.0,), ("float64",), samples=100,
                   seeds=(0, 1, 2), reference_steps=400, reference_method="ddim", measures=GEN),
        Experiment("editing the digit", "edit", (Sampler("O-BELM", "obelm"),), (28,), (3.0,), images=20,
                   strengths=(0.4, 0.6, 0.8, 1.0), variants=(PLAIN,), changes=("digit",), measures=EDIT),
        Experiment("interpolation", "interpolation", FLOW_GENERATORS, (28,), images=2, measures=("endpoint_error",)),
        # reference: Euler, as the generation table's (O-BELM extrapolates on SD3's shifted grid); cross-checked by
        # the same solve on the uniform sigmas shift(k / N) (the model's own grids share their last step)
        Experiment("samplers", "samplers", FLOW_COMPARED, guidance=(3.0,),
                   **dict(SAMPLERS_AT, reference_steps=400), reference_method="ddim"),
    ]


def _generic(quick: bool) -> list[Experiment]:
    steps = (10, 50) if quick else (10, 20, 50, 100)
    return [
        Experiment("reconstruction", "reconstruction", DIGITS_SAMPLERS, steps, (1.0, 2.0),
                   ("float32",) if quick else DTYPES, images=1000, measures=RECON),  # images: all given
        Experiment("interpolation", "interpolation", GENERATORS, (50,), images=2, measures=("endpoint_error",)),
        # run only with a target prompt (the CLI's --target-prompt): the first image, no judge
        Experiment("editing", "edit", (Sampler("O-BELM", "obelm"),), (50,), (7.5,), images=1,
                   strengths=(0.2, 0.4, 0.6, 0.8, 1.0) if not quick else (0.6, 1.0), variants=(DIRECT,),
                   changes=("prompt",), measures=("source_distance",)),
    ]


_BY_MODEL = {"digits": _digits, "mnist-sd": _mnist_sd, "mnist-flow": _mnist_flow, "generic": _generic}


def definitions_for(model: str, quick: bool = False) -> list[Experiment]:
    """The experiment list of a built-in model (``digits``, ``mnist-sd``, ``mnist-flow``) or of any other
    local model (``generic``: reconstruction and interpolation, no judge needed)."""
    if model not in _BY_MODEL:
        raise ValueError(f"model must be one of {tuple(_BY_MODEL)}, got {model!r}")
    return _BY_MODEL[model](quick)


def check_unique_names(experiments: Sequence[Experiment]) -> None:
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ValueError(f"experiment names must be distinct (they key results.json), got {names}")
