"""The seeds' experiments as data, run by one runner on any model (``linmultistep reproduce``).

- ``definitions.py``: :class:`Experiment` (model-independent: kind, samplers in their modes, step counts,
  guidance scales, dtypes, sizes, measures), validated when built; the lists per model.
- ``subjects.py``: the model under study (UNet pipelines: digits, mnist-sd, local SD; flow transformers:
  mnist-flow), the few operations experiments need.
- ``measures.py``: reconstruction MSE, judge accuracy, Fréchet distance, error against a high-accuracy
  solution, edit share and distance, interpolation endpoint error.
- ``runner.py``: one runner; ``report.py``: report.md, results.json, figures; ``cli.py``: the command.
"""

from .definitions import EditVariant, Experiment, Sampler, definitions_for

__all__ = ["Experiment", "Sampler", "EditVariant", "definitions_for"]
