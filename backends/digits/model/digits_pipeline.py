"""diffusers' custom-pipeline file of the shipped digits model.

``model_index.json`` names ``["digits_pipeline", "DigitsPipeline"]``, diffusers' convention for a
pipeline class that is not part of diffusers, so plain diffusers loads this folder with

    DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)

This file runs no code of its own: the class comes from the installed linmultistep package.
"""

from linmultistep.backends.digits.pipeline import DigitsPipeline

__all__ = ["DigitsPipeline"]
