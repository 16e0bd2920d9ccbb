"""The settings of a pipeline call, grouped: what a latent is computed with, and how an edit is made.

The pipeline functions (:func:`.pipeline.invert`, :func:`.pipeline.reconstruct`, :func:`.pipeline.edit`,
:func:`.generation.generate`, :func:`.dataset.invert_dataset` and the flow pipeline's ``invert`` /
``reconstruct`` / ``edit``) take as named parameters what varies from call to call -- the images, the
prompts and their guidance, the random generator, where to stop, how to return the result -- and group
the rest:

- :class:`InversionSettings`: the numerics a latent is computed with and records (the grid's step count,
  the method in its mode, the state dtype, how images are fitted to the model, how the network is
  batched and threaded). The same settings serve invert, reconstruct, edit, generate and a dataset run.
- :class:`EditSettings`: how :func:`.pipeline.edit` turns the inversion into an edit (strength, the
  steps frozen to the source prompt, the source branch, the attention sharing).

Every field is also accepted as a keyword of those functions (``invert(pipe, x, num_steps=10,
method="edict")``), a shortcut that overrides the same field of ``settings=``. A field the function does
not use, or an unknown keyword, is refused by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch

import linmultistep as lms
from linmultistep import FixedPointRangeError, Method

from .arguments import check_finite

__all__ = ["InversionSettings", "EditSettings", "INVERSION_FIELDS", "EDIT_FIELDS", "settings_of", "edit_settings_of", "method_in_mode",
           "check_arguments", "bound_hint"]


@dataclass(frozen=True)
class InversionSettings:
    """What a latent is computed with (recorded in it, so :func:`.pipeline.reconstruct` reads them back).

    ``num_steps``: steps of the scheduler's grid (None: the function's default, 50 for UNet pipelines and
    28 for flow pipelines; in reconstruct the latent's). ``method``: a name or a Method (None: 'obelm';
    in reconstruct the latent's). ``mode`` / ``mode_options``: the form (docs/precision.md; None: the
    core's default). ``state_dtype``: the dtype of the states (None: the network's). ``resize``: how
    images of other sizes are fitted (:mod:`.images`). ``eval_batch`` / ``eval_threads``: rows per
    network call (padded) and intra-op threads, so an image's network outputs do not depend on its batch
    or the machine's thread count (docs/datasets.md). ``allow_size_mismatch``: run on images far from the
    model's trained size (refused by default, stating the cost: :func:`.images.check_trained_size`)."""

    num_steps: "int | None" = None
    method: "str | Method | None" = None
    mode: "str | None" = None
    mode_options: "dict | None" = None
    state_dtype: "torch.dtype | None" = None
    resize: "str | None" = None
    eval_batch: "int | None" = None
    eval_threads: "int | None" = None
    allow_size_mismatch: bool = False

    def steps(self, default: int) -> int:
        return default if self.num_steps is None else self.num_steps

    def method_object(self) -> Method:
        """The method in its mode (the method defaults to O-BELM)."""
        return method_in_mode("obelm" if self.method is None else self.method, self.mode, self.mode_options)


@dataclass(frozen=True)
class EditSettings:
    """How :func:`.pipeline.edit` edits: ``strength`` in (0, 1] (the fraction of the steps re-sampled),
    ``freeze_last`` (last steps sampled with the source prompt), ``direct_inversion`` (the pinned source
    branch), ``self_attention_steps`` / ``cross_attention_steps`` in [0, 1] (fractions of the re-sampled
    steps, noise end first, with the source branch's self- / cross-attention maps)."""

    strength: float = 1.0
    freeze_last: int = 0
    direct_inversion: bool = True
    self_attention_steps: float = 0.4
    cross_attention_steps: float = 0.0


INVERSION_FIELDS = tuple(f.name for f in dataclasses.fields(InversionSettings))
EDIT_FIELDS = tuple(f.name for f in dataclasses.fields(EditSettings))


def _split(caller: str, options: Mapping[str, Any], known: tuple, unused: tuple) -> None:
    for key in options:
        if key in unused:
            raise TypeError(f"{caller}() takes no {key} (a setting the other pipeline functions use)")
        if key not in known:
            raise TypeError(f"{caller}() got an unexpected keyword argument {key!r}; its settings are "
                            f"{', '.join(k for k in known if k not in unused)}")


def settings_of(caller: str, settings: "InversionSettings | None", options: Mapping[str, Any],
                unused: tuple = (), also: tuple = ()) -> InversionSettings:
    """``settings`` (None: the defaults) with the keyword shortcuts in ``options`` applied. Keywords
    neither settings fields nor in ``also`` (handled by the caller), or fields in ``unused``, are refused
    with a TypeError naming them."""
    if settings is not None and not isinstance(settings, InversionSettings):
        raise TypeError(f"settings must be an InversionSettings or None, got {type(settings).__name__}")
    _split(caller, options, INVERSION_FIELDS + also, unused)
    mine = {k: v for k, v in options.items() if k in INVERSION_FIELDS}
    return dataclasses.replace(settings or InversionSettings(), **mine)


def edit_settings_of(editing: "EditSettings | None", options: Mapping[str, Any]) -> EditSettings:
    """``editing`` (None: the defaults) with the keyword shortcuts of its fields in ``options`` applied."""
    if editing is not None and not isinstance(editing, EditSettings):
        raise TypeError(f"editing must be an EditSettings or None, got {type(editing).__name__}")
    mine = {k: v for k, v in options.items() if k in EDIT_FIELDS}
    return dataclasses.replace(editing or EditSettings(), **mine)


def method_in_mode(method: "str | Method", mode: str | None, mode_options: dict | None = None) -> Method:
    """``method`` computed in ``mode`` with the mode's keyword options (e.g. ``{"eps_bound": 256}``
    for 'bits'); mode None: the method object's own mode if not 'recurrence', else the core's
    :func:`linmultistep.default_mode`."""
    if mode_options is not None and not isinstance(mode_options, dict):
        raise TypeError(f"mode_options must be a dict such as {{'eps_bound': 256}}, got {type(mode_options).__name__}")
    return lms.resolve_mode(method, mode, options=mode_options)


def check_arguments(generator: Any = None, state_dtype: Any = None, **values: Any) -> None:
    """Arguments that would otherwise fail deep inside torch or compute something else silently."""
    if generator is not None and not isinstance(generator, torch.Generator):
        hint = f" (e.g. torch.Generator().manual_seed({generator}))" if isinstance(generator, int) else ""
        raise TypeError(f"generator must be a torch.Generator{hint} or None, got {type(generator).__name__}")
    if state_dtype is not None and (not isinstance(state_dtype, torch.dtype) or not state_dtype.is_floating_point
                                    or state_dtype.is_complex):
        raise TypeError(f"state_dtype must be a real floating-point torch dtype (torch.float32, torch.float64, ...), "
                        f"got {state_dtype!r}: an integer state would truncate the latent")
    check_finite(**values)


@contextlib.contextmanager
def bound_hint() -> Iterator[None]:
    """Say how to raise the bounds of mode 'bits' in this API (guidance can push |eps| past 64)."""
    try:
        yield
    except FixedPointRangeError as exc:
        raise FixedPointRangeError(
            f"{exc}. Here: mode='bits', mode_options={{'eps_bound': ...}} (or 'data_bound'); classifier-free "
            "guidance scales eps differences by the guidance scale"
        ) from None
