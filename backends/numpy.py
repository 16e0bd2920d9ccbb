"""NumPy array backend: lives in the core (:mod:`linmultistep.numpy_backend`); re-exported here."""

from linmultistep.numpy_backend import NumpyBackend

__all__ = ["NumpyBackend"]
