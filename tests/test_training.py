"""Training engine: recipe, checkpoints, exact resume, torchrun, bad input."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from micranet_utils.model.network import MICRANet
from micranet_utils.train import batching, loop as training_loop, runs as training
from micranet_utils.io import checkpoints
from micranet_utils.cli import main as cli_main
from micranet_utils.base.errors import DatasetError, ZooError
from micranet_utils.io.zoo import load_zoo, save_zoo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from original_network import original_logits  # noqa: E402
from training_data import TINY, write_tiny_folder, write_tiny_split  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_folder(tmp_path / "data")


def weights_of(path):
    """The state_dict in a zoo file, read the original's way (no help from our loader)."""
    with h5py.File(path, "r") as file:
        (name, node), = file["MICRANet"].items()
        return {key: torch.tensor(value[()]) for key, value in node.items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# -- the run folder and the checkpoints --------------------------------------------------------
def test_dry_run_cli_writes_checkpoints_the_original_loads(tiny, tmp_path):
    run = tmp_path / "run"
    status = cli_main(["train", "--data", str(tiny), "--output", str(run), "--dry-run", "--device", "cpu",
                       "--size", "32", "--batch-size", "8", "--no-progress"])
    assert status == 0
    assert {p.name for p in run.iterdir()} >= {"best.hdf5", "last.hdf5", "history.csv", "history.png",
                                                "trainer_params.json"}
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    state = weights_of(run / "best.hdf5")
    with h5py.File(run / "best.hdf5", "r") as file:
        params = json.loads(file["MICRANet"].attrs["trainer_params"])
    assert params["model_params"] == {"num_classes": 2, "num_input_images": 1}
    assert "num_classes" not in params and params["size"] == 32
    # the recipe is recorded
    assert params["lr"] == 1e-3 and params["pos_weight"] == [3.3, 1.6] and params["data_aug"] == 0.5
    assert params["scheduler"] == {"mode": "min", "factor": 0.1, "patience": 10, "threshold": 0.01,
                                   "threshold_mode": "rel", "min_lr": 1e-5}
    model = MICRANet(2, 1)
    model.load_state_dict(state, strict=True)
    x = torch.rand(3, 1, 32, 32)
    torch.testing.assert_close(model.eval()(x), original_logits(state, x, params["size"]))
    rows = checkpoints.read_history(run / "history.csv")
    assert len(rows) == 1 and rows[0]["best"] == 1


def test_history_and_result_agree(tiny, tmp_path):
    result = training.train(tiny, tmp_path / "run", **TINY)
    rows = checkpoints.read_history(tmp_path / "run" / "history.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    for row, kept in zip(rows, result.history):
        assert row["valid_loss"] == pytest.approx(kept["valid_loss"])
    best = min(result.history, key=lambda r: r["valid_loss"])
    assert result.best_epoch == best["epoch"] and result.best_loss == best["valid_loss"]
    for name in ("rings", "fibers"):
        counts = [rows[-1][f"valid_{k}_{name}"] for k in ("tp", "fp", "fn", "tn")]
        assert sum(counts) == result.params["num_crops"]["validation"]


def test_checkpoint_round_trip_keeps_optimizer_and_rng(tmp_path):
    model = MICRANet(2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.rand(2, 1, 16, 16)).sum().backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(5)
    path = checkpoints.save_checkpoint(tmp_path / "last.hdf5", model, {"size": 16}, "m",
                                       {"epoch": 3, "loss": math.inf}, optimizer, {"augment": generator})
    expected = torch.rand(3), np.random.rand(3)
    saved_generator = generator.get_state()
    generator.manual_seed(9)
    state = checkpoints.read_training_state(path)
    assert state["epoch"] == 3 and state["loss"] == math.inf
    restored = torch.optim.Adam(MICRANet(2).parameters())
    restored.load_state_dict(state["optimizer"])
    saved, loaded = optimizer.state_dict()["state"], restored.state_dict()["state"]
    assert list(saved) == list(loaded)
    for index in saved:
        for key in saved[index]:
            assert torch.equal(saved[index][key], loaded[index][key]), (index, key)
    checkpoints.restore_rng(state, {"augment": generator})
    assert torch.equal(generator.get_state(), saved_generator)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    kinds = set()
    with h5py.File(path, "r") as file:   # nothing pickled: only numeric arrays and text
        file.visititems(lambda name, item: kinds.add(item.dtype.kind) if isinstance(item, h5py.Dataset) else None)
    assert kinds <= {"f", "i", "u"}, kinds


def test_plain_zoo_is_not_resumable(tmp_path, random_model):
    save_zoo(tmp_path / "zoo.hdf5", random_model, {"size": 64})
    with pytest.raises(ZooError, match="not a resumable checkpoint"):
        checkpoints.read_training_state(tmp_path / "zoo.hdf5")


# -- exact resume ---------------------------------------------------------------------------------
def run_child(*args, env=None, check=True):
    return subprocess.run([sys.executable, str(HERE / "train_subprocess.py"), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=240, check=check)


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tiny, tmp_path):
    settings = {**TINY, "epochs": 3}
    reference = training.train(tiny, tmp_path / "reference", **settings)
    killed = run_child("train", tiny, tmp_path / "run", json.dumps(settings), 2, 3, check=False)
    assert killed.returncode == -9, killed.stderr
    assert checkpoints.read_training_state(tmp_path / "run" / "last.hdf5")["epoch"] == 1
    resumed = run_child("resume", tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(weights_of(tmp_path / "run" / "last.hdf5"), weights_of(reference.last))
    assert_same_weights(weights_of(tmp_path / "run" / "best.hdf5"), weights_of(reference.best))
    rows = checkpoints.read_history(tmp_path / "run" / "history.csv")
    assert [r["valid_loss"] for r in rows] == [r["valid_loss"] for r in reference.history]


def test_resume_from_a_batch_position(tiny, tmp_path, monkeypatch):
    settings = {**TINY, "epochs": 2, "checkpoint_every": 2}
    reference = training.train(tiny, tmp_path / "reference", **settings)

    def crash(info):
        if info["event"] == "batch" and (info["epoch"], info["batch"]) == (2, 5):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(tiny, tmp_path / "run", callback=crash, **settings)
    state = checkpoints.read_training_state(tmp_path / "run" / "last.hdf5")
    assert (state["epoch"], state["position"]) == (1, 4)       # epoch 2 in progress, 4 batches done
    resumed = training.resume(tmp_path / "run", progress=False)
    assert_same_weights(resumed.model.state_dict(), reference.model.state_dict())
    assert resumed.history[-1]["train_loss"] == pytest.approx(reference.history[-1]["train_loss"])


def test_resume_of_a_finished_run_changes_nothing_and_can_extend(tiny, tmp_path):
    first = training.train(tiny, tmp_path / "run", **TINY)
    again = training.resume(tmp_path / "run", progress=False)
    assert_same_weights(again.model.state_dict(), first.model.state_dict())
    longer = training.resume(tmp_path / "run", epochs=3, progress=False)
    assert len(longer.history) == 3


# -- scale-out ------------------------------------------------------------------------------------
def test_two_gloo_ranks_finish_with_identical_weights_and_one_checkpoint(tiny, tmp_path):
    dump = tmp_path / "dump"
    dump.mkdir()
    settings = {**TINY, "epochs": 1, "device": "cpu"}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(29500 + os.getpid() % 1000),
               str(HERE / "train_subprocess.py"), "train", str(tiny), str(tmp_path / "run"),
               json.dumps(settings), "--dump", str(dump)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [dict(np.load(dump / f"rank{r}.npz")) for r in (0, 1)]
    for key in ranks[0]:
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)
    saved = weights_of(tmp_path / "run" / "last.hdf5")
    for key in saved:
        np.testing.assert_array_equal(saved[key].numpy(), ranks[0][key], err_msg=key)
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.suffix == ".hdf5") == ["best.hdf5", "last.hdf5"]
    assert json.loads((tmp_path / "run" / "trainer_params.json").read_text())["num_crops"]["training"] == 54


# -- fine-tuning ----------------------------------------------------------------------------------
def test_restore_from_and_freeze_all_conv(tiny, tmp_path, random_model):
    zoo = save_zoo(tmp_path / "start.hdf5", random_model, {"size": 32})
    result = training.train(tiny, tmp_path / "run", restore_from=zoo, freeze="all-conv",
                            **{**TINY, "epochs": 1})
    before, after = random_model.state_dict(), result.model.state_dict()
    for key in before:
        if key.endswith(("weight", "bias")) and not key.startswith("linear1"):
            assert torch.equal(before[key], after[key]), key      # frozen
    assert not torch.equal(before["linear1.weight"], after["linear1.weight"])
    assert result.params["freeze"] == ["all-conv"]


def test_freeze_names():
    model = MICRANet(2)
    frozen = training_loop.freeze_parameters(model, ["1a", "conv4b"])
    assert frozen == ["conv1a.weight", "conv1a.bias", "bnorm1a.weight", "bnorm1a.bias",
                      "conv4b.weight", "conv4b.bias"]
    with pytest.raises(ValueError, match="cannot freeze 'conv9'"):
        training_loop.freeze_parameters(model, ["conv9"])


def test_restore_from_a_zoo_with_other_classes_keeps_all_but_linear1(tiny, tmp_path):
    source = MICRANet(5)
    zoo = save_zoo(tmp_path / "five.hdf5", source, {"size": 32})
    result = training.train(tiny, tmp_path / "run", restore_from=zoo, freeze="all-conv",
                            **{**TINY, "epochs": 1})
    assert torch.equal(result.model.conv2a.weight, source.conv2a.weight)
    assert result.model.linear1.weight.shape == (2, 256)


# -- bad input ------------------------------------------------------------------------------------
def test_missing_file_and_wrong_layout(tmp_path):
    with pytest.raises(DatasetError, match="no such training file or folder"):
        training.train(tmp_path / "nothing.hdf5", tmp_path / "run", **TINY)
    with pytest.raises(DatasetError, match="validation"):
        training.train(write_tiny_split(tmp_path / "t.hdf5"), tmp_path / "run", **TINY)
    bad = tmp_path / "bad"
    bad.mkdir()
    with h5py.File(bad / "training_x.hdf5", "w") as file:
        file.create_group("g").create_dataset("data", data=np.zeros((1, 8, 8)))
    write_tiny_split(bad / "validation_x.hdf5")
    with pytest.raises(DatasetError, match="missing dataset 'label'"):
        training.train(bad, tmp_path / "run", **TINY)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind, message", [("always", "every crop is positive for rings: the classifier "
                                                      "cannot learn it"),
                                           ("never", "no crop is positive for fibers")])
def test_a_class_without_contrast_is_refused(tmp_path, kind, message):
    data = write_tiny_folder(tmp_path / "data", **({"always": 0} if kind == "always" else {"never": 1}))
    with pytest.raises(DatasetError, match=message):
        training.train(data, tmp_path / "run", **TINY)


def test_fewer_crops_than_one_batch(tiny, tmp_path):
    with pytest.raises(DatasetError, match="54 crops .* fewer than one batch of 64"):
        training.train(tiny, tmp_path / "run", **{**TINY, "batch_size": 64})


def test_an_existing_run_is_not_overwritten_and_the_cli_resumes_it(tiny, tmp_path, capsys):
    training.train(tiny, tmp_path / "run", **{**TINY, "dry_run": True})
    with pytest.raises(training.TrainingError, match="--resume"):
        training.train(tiny, tmp_path / "run", **TINY)
    assert cli_main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--no-progress"]) == 0
    assert "best model:" in capsys.readouterr().out
    assert len(checkpoints.read_history(tmp_path / "run" / "history.csv")) == 2


def test_cli_reports_bad_input_in_one_line(tiny, tmp_path, capsys):
    assert cli_main(["train", "--data", str(tiny), "--output", str(tmp_path / "run"), "--size", "32",
                     "--batch-size", "8", "--pos-weight", "1", "2", "3", "--no-progress"]) == 2
    assert "pos_weight has 3 values but the data have 2 classes" in capsys.readouterr().err
    assert cli_main(["train", "--data", str(tiny), "--output", str(tmp_path / "run"), "--pos-weight", "x"]) == 2


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    plain = batching.augment_batch
    calls = []

    def poisoned(images, probability, generator):
        calls.append(1)
        images = plain(images, probability, generator)
        return images * float("nan") if len(calls) > 7 else images    # epoch 2, batch 2

    monkeypatch.setattr(training_loop, "augment_batch", poisoned)
    with pytest.raises(training.TrainingError, match="loss became nan at epoch 2, batch 2"):
        training.train(tiny, tmp_path / "run", **TINY)
    state = checkpoints.read_training_state(tmp_path / "run" / "last.hdf5")
    assert (state["epoch"], state["position"]) == (1, 0)
    model, _ = load_zoo(tmp_path / "run" / "last.hdf5")          # load_zoo refuses NaN weights
    assert all(torch.isfinite(v.float()).all() for v in model.state_dict().values())


def test_failure_while_saving_leaves_the_previous_checkpoint(tiny, tmp_path, monkeypatch):
    run = tmp_path / "run"
    training.train(tiny, run, **{**TINY, "epochs": 1})
    before = (run / "last.hdf5").read_bytes()

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "_write_optimizer", full_disk)
    with pytest.raises(OSError, match="No space left"):
        training.resume(run, epochs=2, progress=False)
    assert (run / "last.hdf5").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert checkpoints.read_training_state(run / "last.hdf5")["epoch"] == 1


# -- the pieces of the loop -----------------------------------------------------------------------
def test_batch_plan_is_a_seeded_permutation_per_epoch():
    plan = batching.batch_plan(10, 3, seed=1, epoch=0)
    assert [len(b) for b in plan] == [3, 3, 3]
    assert len(set(sum(plan, []))) == 9
    assert plan == batching.batch_plan(10, 3, seed=1, epoch=0)
    assert plan != batching.batch_plan(10, 3, seed=1, epoch=1)
    assert batching.batch_plan(5, 2, 0, 0, shuffle=False, drop_last=False) == [[0, 1], [2, 3], [4]]


def reference_augment(image, coins, scale, gamma):
    """One crop, written like the original loader (numpy, step by step)."""
    image = image.copy()
    if coins[0]:
        image = np.fliplr(image)
    if coins[1]:
        image = np.flipud(image)
    if coins[2]:
        image = np.clip(image * scale, 0, 1)
    if coins[3]:
        image = np.clip(image ** gamma, 0, 1)
    return image


def test_augment_batch_matches_the_per_crop_original():
    images = torch.rand(16, 1, 8, 8) * 1.2
    generator = torch.Generator().manual_seed(3)
    out = batching.augment_batch(images, 0.5, generator)
    generator.manual_seed(3)                              # replay the same draws
    coins = (torch.rand(16, 4, generator=generator) < 0.5).numpy()
    normal = torch.randn(16, 2, generator=generator).double().numpy()
    scale = np.clip(np.exp(0.01 + 0.1 * normal[:, 0]), 0, 1)
    gamma = np.clip(np.exp(0.005 + np.sqrt(0.005) * normal[:, 1]), 0, 1)
    for n in range(16):
        expected = reference_augment(images[n, 0].numpy(), coins[n], np.float32(scale[n]), np.float32(gamma[n]))
        np.testing.assert_allclose(out[n, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert coins.any(axis=0).all() and not coins.all(axis=0).any()
    assert torch.equal(batching.augment_batch(images, 0.0, generator), images)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.01, 10), min_size=1, max_size=40))
def test_stepping_on_the_running_minimum_gives_the_same_lr(losses):
    """The original feeds ReduceLROnPlateau the best loss so far; we feed the current one."""
    def lrs(values):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=2,
                                                               threshold=0.01, min_lr=1e-5)
        out = []
        for value in values:
            scheduler.step(value)
            out.append(optimizer.param_groups[0]["lr"])
        return out

    running = list(np.minimum.accumulate(losses))
    assert lrs(losses) == lrs(running)


def test_pos_weight_rules():
    targets = np.array([[1, 0], [0, 0], [1, 1], [0, 0]], bool)
    assert training_loop.resolve_pos_weight("balanced", targets, ("a", "b"), "f") == [1.0, 3.0]
    assert training_loop.resolve_pos_weight(None, targets, ("a", "b"), "f") == [1.0, 1.0]
    with pytest.raises(DatasetError, match="pos_weight has 1 values but the data have 2 classes"):
        training_loop.resolve_pos_weight([2.0], targets, ("a", "b"), "f")


def test_classification_metrics_against_definitions():
    rng = np.random.default_rng(0)
    truth, predicted = rng.random((50, 2)) > 0.5, rng.random((50, 2)) > 0.4
    counts = np.stack([(predicted & truth).sum(0), (predicted & ~truth).sum(0),
                       (~predicted & truth).sum(0), (~predicted & ~truth).sum(0)])
    metrics = training_loop.classification_metrics(counts, ("a", "b"))
    for c, name in enumerate("ab"):
        precision = (predicted[:, c] & truth[:, c]).sum() / predicted[:, c].sum()
        recall = (predicted[:, c] & truth[:, c]).sum() / truth[:, c].sum()
        assert metrics[f"f1_{name}"] == pytest.approx(2 * precision * recall / (precision + recall))
        assert metrics[f"accuracy_{name}"] == pytest.approx((predicted[:, c] == truth[:, c]).mean())


# -- the lessons' demo model ----------------------------------------------------------------------
def test_ensure_demo_model_trains_once_then_reuses(tmp_path, monkeypatch):
    from micranet_utils.tutorial import demo_models

    def tiny_demo(folder, seed=0, fast=None, progress=True):
        write_tiny_folder(folder)
        return {"training": folder / "training_tiny.hdf5", "validation": folder / "validation_tiny.hdf5"}

    monkeypatch.setattr(demo_models, "ensure_demo", tiny_demo)
    tiny_settings = {k: v for k, v in TINY.items() if k != "progress"}
    monkeypatch.setattr(demo_models, "DEMO_SETTINGS", {"fast": {**tiny_settings, "epochs": 1}, "full": tiny_settings})
    path = demo_models.ensure_demo_model(tmp_path, fast=True, progress=False)
    assert path == tmp_path / "models" / "demo_micranet.hdf5"
    model, params = load_zoo(path)
    assert params["demo_fast"] is True and params["epochs"] == 1
    assert_same_weights(model.state_dict(), weights_of(demo_models.demo_run_dir(tmp_path, True) / "best.hdf5"))

    def no_training(*args, **kwargs):
        raise AssertionError("should not train again")

    monkeypatch.setattr(demo_models, "train", no_training)
    assert demo_models.ensure_demo_model(tmp_path, fast=True, progress=False) == path
    monkeypatch.undo()
    monkeypatch.setattr(demo_models, "ensure_demo", tiny_demo)
    monkeypatch.setattr(demo_models, "DEMO_SETTINGS", {"fast": tiny_settings, "full": {**tiny_settings, "epochs": 1}})
    demo_models.ensure_demo_model(tmp_path, fast=False, progress=False)     # full mode replaces a fast model
    assert load_zoo(path)[1]["demo_fast"] is False
