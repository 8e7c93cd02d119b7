"""Shared fixtures. Everything here is small, offline and fast."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import randomise_batchnorm

os.environ.setdefault("MICRANET_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
UPSTREAM_SAMPLES = SHARED / "fixtures" / "upstream-samples"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def upstream_samples():
    """Folder of the real sample images of the original repository; skips when absent."""
    if not UPSTREAM_SAMPLES.is_dir():
        pytest.skip(f"real sample images not available ({UPSTREAM_SAMPLES} is absent)")
    return UPSTREAM_SAMPLES


@pytest.fixture
def one_thread():
    """Run the test on one thread: small convolutions are faster so on a busy 2-core machine,
    and every process computes the same numbers. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def random_model():
    """An Actin-shaped MICRA-Net with random weights and non-trivial BatchNorm statistics."""
    from micranet_utils.model.network import MICRANet

    return randomise_batchnorm(MICRANet(num_classes=2, in_channels=1), seed=1)


@pytest.fixture(scope="session")
def published_server():
    """A 127.0.0.1 server holding a small stand-in of the published files, in their exact layout.

    See ``tests/published_archive.py``; built once per session (a few seconds).
    Tests point ``MICRANET_BASE_URL`` at ``published_server.url``.
    """
    from http_server import FileServer
    from published_archive import published_files

    with FileServer(published_files()) as server:
        yield server


@pytest.fixture(scope="session")
def published_home(published_server, tmp_path_factory):
    """A ``MICRANET_HOME`` into which ``fetch_published("all")`` has downloaded the stand-in archive."""
    import warnings

    from micranet_utils.io.download import fetch_published

    home = tmp_path_factory.mktemp("micranet-home")
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore")                       # the files are unverified: no hash recorded
        patch.setenv("MICRANET_BASE_URL", published_server.url)
        fetch_published("all", home, progress=False)
    return home
