"""Training MICRA-Net from image-level labels: the original recipe, resumable, on one or several devices.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submodules=['batching', 'loop', 'runs'])
