"""The lessons' scaffolding: demo data and its drawing, the demo models, the baselines MICRA-Net
is compared with, the comparison itself, the interactive viewer and the lessons' helpers.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submodules=['baselines', 'comparison', 'demo_data', 'demo_drawing', 'demo_models', 'lessons', 'viewer'])
