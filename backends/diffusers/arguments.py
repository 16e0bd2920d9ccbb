"""Numeric arguments of the diffusers calls, checked once for the library and the command line.

Neither torch nor diffusers is imported here, so the CLI refuses a bad value before the model
loads, with the library's own message in its option names (each error is an ``ArgumentError``
naming its argument, which the CLI shows as the option: ``strength`` as ``--strength``).

>>> check_edit_numbers(strength=0.8, self_attention_steps=0.4, guidance_scale=7.5, source_guidance_scale=1.0)
>>> check_edit_numbers(strength=0.0, self_attention_steps=0.4, guidance_scale=7.5, source_guidance_scale=1.0)
Traceback (most recent call last):
linmultistep.errors.ArgumentError: strength must be in (0, 1], got 0.0
"""

from __future__ import annotations

import math
import numbers

from linmultistep.errors import ArgumentError

__all__ = ["check_finite", "check_edit_numbers"]


def check_finite(**values: object) -> None:
    """Each value is a real, finite number (not a bool, not a string); ValueError naming the first that is not."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ArgumentError(name, f"must be a finite number, got {value!r}")


def check_edit_numbers(*, strength: object, self_attention_steps: object, guidance_scale: object,
                       source_guidance_scale: object, cross_attention_steps: object = 0.0) -> None:
    """The numbers of :func:`~linmultistep.backends.diffusers.edit`: all finite, ``strength`` in (0, 1] (the
    fraction of the steps re-sampled), ``self_attention_steps`` and ``cross_attention_steps`` in [0, 1]
    (fractions of those steps)."""
    check_finite(strength=strength, source_guidance_scale=source_guidance_scale, guidance_scale=guidance_scale,
                 self_attention_steps=self_attention_steps, cross_attention_steps=cross_attention_steps)
    if not 0.0 < float(strength) <= 1.0:  # type: ignore[arg-type]
        raise ArgumentError("strength", f"must be in (0, 1], got {strength!r}")
    for name, value in (("self_attention_steps", self_attention_steps), ("cross_attention_steps", cross_attention_steps)):
        if not 0.0 <= float(value) <= 1.0:  # type: ignore[arg-type]
            raise ArgumentError(name, f"must be a fraction of the steps in [0, 1], got {value!r}")
