"""Exceptions raised by linmultistep; each message names the offending index or value."""


class LinmultistepError(Exception):
    """Base class of every error this library raises on purpose.

    ``argument`` (keyword, optional): the name of the keyword argument at fault, so a front end can
    say it in its own words (the command line shows the option typed for it)."""

    def __init__(self, *args: object, argument: "str | None" = None) -> None:
        super().__init__(*args)
        self.argument = argument


class ArgumentError(LinmultistepError, ValueError):
    """A value given for a named argument cannot work. ``argument`` is the keyword's name and
    ``problem`` the rest of the message, so a front end (the command line) can say it under its own
    name for the argument: ``ArgumentError("strength", "must be in (0, 1], got 0.0")``."""

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"{argument} {problem}", argument=argument)
        self.problem = problem

    def __reduce__(self):  # picklable across processes (torch.distributed, multiprocessing)
        return type(self), (self.argument, self.problem)


class GridError(LinmultistepError, ValueError):
    """A noise grid or time grid is unusable (non-finite, non-monotone, duplicate timesteps...)."""


class MethodError(LinmultistepError, ValueError):
    """A method is unknown, badly parameterised, or cannot run in the requested direction."""


class LatentMismatchError(LinmultistepError, ValueError):
    """A latent/state belongs to another method, grid or mode than the one asked to continue it."""


class NonFiniteError(LinmultistepError, FloatingPointError):
    """The vector field (the network) returned NaN or infinity."""


class FixedPointRangeError(LinmultistepError, OverflowError):
    """The bit-exact mode cannot hold a run in int64 (data, network output or grid out of range)."""


class NondeterministicNetworkError(LinmultistepError, RuntimeError):
    """The network gave different outputs for identical inputs, so a bit-exact inversion would be wrong."""


class PrecisionWarning(UserWarning):
    """A run whose rounding errors can grow past 1% of the data (EDICT with small p, BDIA(gamma < 1)
    inverted over many steps): the round trip may be far from exact."""
