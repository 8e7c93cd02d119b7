"""The bottom layer: what every other layer needs and that needs nothing of ours.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submodules=['arrays', 'checks', 'datasets', 'devices', 'errors', 'files'])
