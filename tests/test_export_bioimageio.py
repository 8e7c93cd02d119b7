"""``micranet export-bioimageio``: the package passes bioimageio.core's test, and equals the package's maps.

One tiny random-weight zoo (1 channel, 2 named classes, 64 x 64 crops) is
exported once; ``bioimageio.core.test_model`` runs on it for both weight
formats, offline (``BIOIMAGEIO_PERFORM_IO_CHECKS=false``: local files only).
The exported network is then compared with ``local_maps`` + the recipe
functions, computed here, to 1e-5, eagerly and as TorchScript; and the
exporter's refusals are checked through the command line.

bioimageio.core is a dev dependency: in CI (``CI`` set) a missing install
fails these tests; elsewhere they are skipped, saying so.
"""

import hashlib
import importlib.util
import os
import subprocess
import sys
import time

os.environ.setdefault("BIOIMAGEIO_PERFORM_IO_CHECKS", "false")     # read when bioimageio.spec is imported

import h5py
import numpy as np
import pytest
import tifffile
import torch

try:
    import bioimageio.core
    from bioimageio.spec import settings as bioimageio_settings
    from bioimageio.spec.model.v0_5 import Identifier
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("bioimageio.core is not installed (pip install -e '.[dev]' installs it; CI runs these tests)",
                allow_module_level=True)

from micranet_utils.analysis.recipes import get_recipe, score_maps
from micranet_utils.apps import export_bioimageio as exporter
from micranet_utils.cli import main
from micranet_utils.io.zoo import save_zoo
from micranet_utils.model.exported_maps import MicranetMaps
from micranet_utils.model.gradcam import local_maps, original_settings, predicted
from micranet_utils.model.network import MICRANet

PIXEL_NM = 20.0
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def random_micranet(seed=0):
    """A random MICRA-Net with BatchNorm statistics a trained one could have (not an identity)."""
    torch.manual_seed(seed)
    net = MICRANet(num_classes=2, in_channels=1).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return net


def write_zoo(path, net, **params):
    params = {"size": 64, "seed": 0, "class_names": ["rings", "fibers"], **params}
    save_zoo(path, net, params, name="random_seed0", class_thresholds=[0.5, 0.5])
    return path


def reference(net, images, recipe, only_predicted=False):
    """local_maps + score_maps, as the package computes them, and the probabilities."""
    settings = original_settings(recipe)
    maps, logits = local_maps(net, images, normalize=settings["normalize"])
    chosen = (predicted(logits, settings["thresholds"], strict=settings["strict"]) if only_predicted
              else np.ones(logits.shape, bool))
    scores = score_maps(maps, chosen, images if get_recipe(recipe).gate_foreground else None, recipe)
    return scores, 1 / (1 + np.exp(-logits.astype(np.float64)))


def images_like_microscopy(n, height, width, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    out = np.zeros((n, 1, height, width), np.float32)
    for i in range(n):
        for _ in range(5):
            cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(2, 8)
            out[i, 0] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        out[i, 0] += 0.05 * rng.standard_normal((height, width))
    out -= out.min(axis=(1, 2, 3), keepdims=True)
    return out / out.max(axis=(1, 2, 3), keepdims=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(network, zoo path, package folder, export seconds): the zoo has no pixel size, given explicitly."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    folder = tmp_path_factory.mktemp("export")
    net = random_micranet()
    zoo = write_zoo(folder / "random_zoo.hdf5", net)
    start = time.perf_counter()
    rdf = exporter.export_bioimageio(zoo, folder / "package", size=64, pixel_size=PIXEL_NM)
    return net, zoo, rdf.parent, time.perf_counter() - start


def test_the_package_holds_every_file(exported):
    _, _, package, seconds = exported
    names = {p.name for p in package.iterdir()}
    assert {"rdf.yaml", "README.md", "cover.png", exporter.ARCHITECTURE_FILE, "weights.pt", "weights_torchscript.pt",
            "test_input.npy", "test_output_maps.npy", "test_output_probabilities.npy"} <= names
    assert not [n for n in names if n.startswith(".")]
    text = (package / "README.md").read_text()
    for needle in (exporter.PAPER_DOI, "GPL-3.0-or-later", "rings, fibers", "20 nm", "Not recorded",
                   "cannot do", "deepImageJ", "ilastik", "napari"):
        assert needle in text, needle
    rdf = (package / "rdf.yaml").read_text()
    assert "class_thresholds" in rdf and "pixel_size_nm: 20.0" in rdf and "absolute_tolerance: 1e-05" in rdf
    assert seconds < 60, f"export took {seconds:.0f} s"


def test_the_architecture_file_imports_nothing_of_ours(exported):
    source = (exported[2] / exporter.ARCHITECTURE_FILE).read_text()
    assert "import micranet_utils" not in source and "from micranet_utils" not in source
    assert "from ." not in source


@pytest.mark.parametrize("weight_format", ["pytorch_state_dict", "torchscript"])
def test_bioimageio_core_test_passes(exported, weight_format):
    assert bioimageio_settings.perform_io_checks is False, "set BIOIMAGEIO_PERFORM_IO_CHECKS=false before imports"
    summary = bioimageio.core.test_model(exported[2] / "rdf.yaml", weight_format=weight_format, devices=["cpu"])
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    assert any("Reproduce test outputs" in d.name for d in summary.details)


def load_architecture(package):
    spec = importlib.util.spec_from_file_location("exported_micranet_maps", package / exporter.ARCHITECTURE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_test_tensors_are_the_package_own_maps(exported):
    net, _, package, _ = exported
    image = exporter.preprocess(np.load(package / "test_input.npy"))
    maps, probabilities = reference(net, image, "actin")
    assert np.abs(np.load(package / "test_output_maps.npy") - maps).max() <= 1e-5
    assert np.abs(np.load(package / "test_output_probabilities.npy") - probabilities).max() <= 1e-5
    assert maps[0, 1].max() > 0                      # something to compare: a non-empty map


def test_both_weight_formats_equal_local_maps_and_the_recipe(exported):
    """Eager (the shipped file + weights.pt) and TorchScript, under no_grad and inference_mode."""
    net, _, package, _ = exported
    module = load_architecture(package)
    eager = module.MicranetMaps(num_classes=2, in_channels=1,
                                **exporter.export_settings({}, "actin", 2)[0])
    eager.load_state_dict(torch.load(package / "weights.pt", weights_only=True), strict=True)
    eager.eval()
    scripted = torch.jit.load(str(package / "weights_torchscript.pt"))
    images = images_like_microscopy(1, 64, 64)
    want_maps, want_prob = reference(net, images, "actin")
    x = torch.from_numpy(images)
    for label, run in (("eager", eager), ("torchscript", scripted)):
        for call in range(2):                        # TorchScript re-optimises after its first calls
            with torch.no_grad() if call == 0 else torch.inference_mode():
                maps, prob = run(x)
            assert np.abs(maps.numpy() - want_maps).max() <= 1e-5, (label, call)
            assert np.abs(prob.numpy() - want_prob).max() <= 1e-5, (label, call)


# the other code paths: layers not normalised (EM), no smoothing (MNIST), only the predicted classes,
# sizes that are not multiples of 8
@pytest.mark.parametrize("recipe, only_predicted, shape", [("em", False, (40, 52)), ("mnist", True, (36, 40))])
def test_other_recipes_and_sizes_equal_the_package(recipe, only_predicted, shape):
    net = random_micranet(seed=1)
    kwargs, _ = exporter.export_settings({}, recipe, 2)
    maps_net = MicranetMaps(num_classes=2, in_channels=1, only_predicted=only_predicted, **kwargs)
    maps_net.load_state_dict(net.state_dict(), strict=True)
    images = images_like_microscopy(1, *shape, seed=3)
    want_maps, want_prob = reference(net, images, recipe, only_predicted)
    with torch.no_grad():
        maps, prob = maps_net.eval()(torch.from_numpy(images))
    assert np.abs(maps.numpy() - want_maps).max() <= 1e-5
    assert np.abs(prob.numpy() - want_prob).max() <= 1e-5


def test_the_pixel_size_comes_from_trainer_params_or_the_training_file(tmp_path):
    assert exporter.pixel_size_of({"pixel_size_nm": 15}) == (15.0, "trainer_params.pixel_size_nm")
    training = tmp_path / "training_demo.hdf5"
    with h5py.File(training, "w") as file:
        file.attrs["pixel_size_nm"] = 20.0
    value, source = exporter.pixel_size_of({"hdf5_training_path": str(training)})
    assert value == 20.0 and "training_demo.hdf5" in source
    assert exporter.pixel_size_of({"hdf5_training_path": str(tmp_path / "gone.hdf5")}) == (None, None)
    assert exporter.pixel_size_of({}, 30)[0] == 30.0


def test_class_names_become_valid_channel_names():
    ids = exporter.channel_ids(["F-actin rings", "2 cells", "rings", "rings ", "***"])
    assert ids == ["F_actin_rings", "c_2_cells", "rings", "class3", "class4"]
    assert all(str(Identifier(i)) == i for i in ids)


# -- refusals: one line, exit status 2, nothing written ------------------------------------------
def run_cli(capsys, *args):
    status = main(["export-bioimageio", *map(str, args)])
    err = capsys.readouterr().err
    return status, err


def assert_one_line(status, err, *needles):
    assert status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_refuses_a_zoo_whose_classes_have_no_names(tmp_path, capsys):
    zoo = tmp_path / "zoo.hdf5"
    save_zoo(zoo, random_micranet(), {"size": 64, "pixel_size_nm": PIXEL_NM}, name="m")
    assert_one_line(*run_cli(capsys, "--model", zoo, "--output", tmp_path / "pkg"), "no names")
    assert not (tmp_path / "pkg").exists()


def test_refuses_a_zoo_without_training_size(tmp_path, capsys):
    zoo = write_zoo(tmp_path / "zoo.hdf5", random_micranet(), pixel_size_nm=PIXEL_NM)
    with h5py.File(zoo, "a") as file:
        text = file["MICRANet"].attrs["trainer_params"]
        file["MICRANet"].attrs["trainer_params"] = text.replace('"size": 64', '"crop": 64')
    assert_one_line(*run_cli(capsys, "--model", zoo, "--output", tmp_path / "pkg"), "training crop size")
    assert not (tmp_path / "pkg").exists()


def test_refuses_a_zoo_without_pixel_size_unless_given(tmp_path, capsys):
    zoo = write_zoo(tmp_path / "zoo.hdf5", random_micranet())
    assert_one_line(*run_cli(capsys, "--model", zoo, "--output", tmp_path / "pkg"), "pixel size", "--pixel-size")
    assert not (tmp_path / "pkg").exists()


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_refuses_an_existing_package_unless_overwrite(exported, tmp_path, capsys):
    _, zoo, package, _ = exported
    before = digest(package)
    assert_one_line(*run_cli(capsys, "--model", zoo, "--output", package, "--pixel-size", PIXEL_NM),
                    "already holds a bioimage.io package", "--overwrite")
    assert digest(package) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    assert_one_line(*run_cli(capsys, "--model", zoo, "--output", other, "--pixel-size", PIXEL_NM, "--overwrite"),
                    "holds no package")
    assert [p.name for p in other.iterdir()] == ["mine.txt"]


def test_overwrite_replaces_the_package_through_the_command_line(exported, tmp_path, capsys):
    _, zoo, package, _ = exported
    copy = tmp_path / "package"
    copy.mkdir()
    for path in package.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "stale.txt").write_text("from an older export")
    image = tmp_path / "test image.tif"
    tifffile.imwrite(image, (4000 * images_like_microscopy(1, 70, 45, seed=5)[0, 0]).astype(np.uint16))
    status = main(["export-bioimageio", "--model", str(zoo), "--output", str(copy), "--pixel-size", "20",
                   "--overwrite", "--recipe", "em", "--test-image", str(image)])
    out = capsys.readouterr().out
    assert status == 0 and "rdf.yaml" in out
    assert not (copy / "stale.txt").exists() and "recipe 'em'" in (copy / "rdf.yaml").read_text()
    assert np.load(copy / "test_input.npy").shape == (1, 1, 64, 40)      # cropped to sizes the rdf allows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["package", "test image.tif"]   # no temporary folder


def test_a_failed_export_writes_nothing(exported, tmp_path, monkeypatch):
    _, zoo, _, _ = exported

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(exporter, "_test_image", broken)          # after the weights are written
    with pytest.raises(RuntimeError, match="disk full"):
        exporter.export_bioimageio(zoo, tmp_path / "package", pixel_size=PIXEL_NM, size=64)
    assert list(tmp_path.iterdir()) == []


def test_help_stays_fast():
    """``micranet --help`` must not import torch or bioimageio (the command imports them when it runs)."""
    code = ("import sys; from micranet_utils.cli import main\n"
            "try: main(['--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'bioimageio.spec') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr
