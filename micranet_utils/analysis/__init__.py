"""From maps to answers: the per-data-set recipes, threshold rules, objects and counts,
fold ensembles, and the metrics that score them.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submodules=['detection', 'ensemble', 'metrics', 'recipes', 'streaming', 'thresholds'])
