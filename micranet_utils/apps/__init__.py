"""Whole tasks a user runs: predict on a folder, check a folder and make training files from it,
describe a model-zoo file, export it as a bioimage.io package. The command line
(:mod:`micranet_utils.cli`) calls them.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submodules=['export_bioimageio', 'folder_check', 'info', 'make_dataset', 'predict', 'stream_predict'])
