"""Files: images (any size, any layout), ModelZoo HDF5, checkpoints, training HDF5 (lazy crops),
the published downloads and safe archive extraction.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submodules=['archives', 'checkpoints', 'download', 'hdf5', 'http', 'images', 'limits', 'registry', 'tiles', 'training_files', 'zoo'])
