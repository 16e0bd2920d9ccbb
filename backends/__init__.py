"""Array backends (numpy, torch) and the diffusers binding of linmultistep.

Installed as ``linmultistep.backends``. Submodules are imported on demand so that the numpy
path never imports torch.
"""
