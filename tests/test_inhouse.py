"""make-dataset: a folder of user images and labels -> checked -> training files."""

import hashlib

import h5py
import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from micranet_utils.cli import main
from micranet_utils.io.training_files import check_training_file, CropDataset, find_split_files
from micranet_utils.base.errors import ArgumentError, DatasetError
from micranet_utils.apps import make_dataset as inhouse
from micranet_utils.apps.make_dataset import make_dataset, split_images
from micranet_utils.apps.folder_check import validate_folder

CROP = 64


def folder_digest(folder):
    """Names, sizes, modification times and contents of every file below `folder`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*")):
        digest.update(path.relative_to(folder).as_posix().encode())
        if path.is_file():
            stat = path.stat()
            digest.update(f"{stat.st_size} {stat.st_mtime_ns}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def cell_image(rng, dtype=np.uint16, shape=(80, 96)):
    """A bright blob on a dim, noisy background, in `dtype`."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blob = np.exp(-((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2) / (2 * 25.0 ** 2))
    values = 0.1 + 0.8 * blob + 0.05 * rng.random(shape)
    if np.dtype(dtype).kind == "f":
        return values.astype(dtype)
    return (values * 0.9 * np.iinfo(dtype).max).astype(dtype)


@pytest.fixture
def lab(tmp_path):
    """A clean lab folder: 12 TIFFs of mixed dtypes and a labels CSV with two classes."""
    rng = np.random.default_rng(0)
    images = tmp_path / "lab"
    images.mkdir()
    rows = ["filename,rings,fibers"]
    for i in range(12):
        dtype = (np.uint8, np.uint16, np.float32)[i % 3]
        tifffile.imwrite(images / f"cell{i:02d}.tif", cell_image(rng, dtype))
        rows.append(f"cell{i:02d}.tif,{i % 2},{(i // 2) % 2}")
    (images / "labels.csv").write_text("\n".join(rows) + "\n")
    return images


def test_clean_folder_gives_files_in_the_published_layout(lab, tmp_path):
    paths = make_dataset(lab, lab / "labels.csv", tmp_path / "out", crop_size=CROP, seed=3)
    assert find_split_files(tmp_path / "out") == {s: paths[s] for s in ("training", "validation", "testing")}
    sources, table = {}, {}
    for line in paths["table"].read_text().splitlines()[1:]:
        name, split, crops, rings, fibers = line.split(",")
        table[name] = (split, (int(rings), int(fibers)))
    for split in ("training", "validation", "testing"):
        summary = check_training_file(paths[split])
        assert summary["num_classes"] == 2
        with h5py.File(paths[split], "r") as file:
            assert list(file.attrs["class_names"]) == ["rings", "fibers"]
            for group in file.values():
                data, label = group["data"][()], group["label"][()]
                assert data.dtype == np.float32 and data.shape == (1, 80, 96)
                assert 0 <= data.min() and data.max() <= 1 and data.max() == 1
                assert label.shape == (1, 3, 80, 96)
                labels = tuple(int(v) for v in group.attrs["labels"])
                foreground = label[0, -1]
                for c in range(2):     # class channel = foreground where the image is positive
                    np.testing.assert_array_equal(label[0, c], foreground * labels[c])
                source = group.attrs["source"]
                assert table[source] == (split, labels)
                sources[source] = split
        crops = CropDataset(paths[split], size=CROP)
        assert len(crops) > 0
    assert sorted(sources) == [f"cell{i:02d}.tif" for i in range(12)]      # each image in exactly one split
    assert [v for v in sources.values()].count("training") == 8


def test_every_kept_crop_carries_its_image_labels(lab, tmp_path):
    paths = make_dataset(lab, lab / "labels.csv", tmp_path / "out", crop_size=CROP)
    crops = CropDataset(paths["training"], size=CROP)
    with h5py.File(paths["training"], "r") as file:
        expected = np.array([file[name].attrs["labels"] for name, *_ in crops.positions], bool)
    np.testing.assert_array_equal(crops.targets(), expected)


def test_same_seed_same_split_other_seed_other_split(lab, tmp_path):
    tables = [make_dataset(lab, lab / "labels.csv", tmp_path / f"out{k}", crop_size=CROP, seed=seed)["table"]
              .read_text() for k, seed in enumerate([1, 1, 2])]
    assert tables[0] == tables[1]
    assert tables[0] != tables[2]


def test_report_lists_every_problem_per_file(lab, tmp_path):
    rng = np.random.default_rng(1)
    (lab / "cell00.tif").write_text("this is not an image\n")                  # unreadable
    (lab / "cell01.tif").write_bytes(b"")                                       # empty
    nan = cell_image(rng, np.float32)
    nan[5, 5] = np.nan
    tifffile.imwrite(lab / "cell02.tif", nan)                                   # NaN
    tifffile.imwrite(lab / "cell03.tif", np.zeros((80, 96, 3), np.uint8), photometric="rgb")   # RGB
    tifffile.imwrite(lab / "cell04.tif", cell_image(rng, shape=(40, 96)))       # smaller than a crop
    tifffile.imwrite(lab / "extra.tif", cell_image(rng))                        # missing from the CSV
    csv = (lab / "labels.csv").read_text().splitlines()
    csv[6] = "cell05.tif,1,yes"                                                 # label not 0/1
    csv += ["ghost.tif,1,0", "cell07.tif,1,1", "cell99.tif,0,0,1"]              # no file, duplicate, columns
    (lab / "labels.csv").write_text("\n".join(csv) + "\n")
    before = folder_digest(lab)
    report = validate_folder(lab, lab / "labels.csv", crop_size=CROP)
    assert folder_digest(lab) == before
    by_file = {}
    for problem in report.errors:
        by_file.setdefault(problem.file, []).append(problem.message)
    text = {name: " ".join(messages) for name, messages in by_file.items()}
    assert "cannot read as an image" in text["cell00.tif"]
    assert "empty (0 bytes)" in text["cell01.tif"]
    assert "NaN or infinite" in text["cell02.tif"]
    assert "3-channel RGB" in text["cell03.tif"] and "--channel" in text["cell03.tif"]
    assert "40x96 pixels, smaller than the 64x64" in text["cell04.tif"]
    assert "label not 0/1 (fibers='yes')" in text["cell05.tif"]
    assert "missing from the CSV" in text["extra.tif"]
    assert "not in" in text["ghost.tif"]
    assert "duplicate" in text["cell07.tif"]
    assert "has 4 columns; the header has 3" in text["cell99.tif"]
    assert "cell08.tif" not in text
    assert not report.ok
    assert str(report).count("error:") == len(report.errors)


def test_class_never_positive_or_never_negative(lab):
    rows = ["filename,rings,fibers"] + [f"cell{i:02d}.tif,0,1" for i in range(12)]
    (lab / "labels.csv").write_text("\n".join(rows) + "\n")
    messages = [p.message for p in validate_folder(lab, lab / "labels.csv", crop_size=CROP).errors]
    assert any("'rings' is never positive" in m for m in messages)
    assert any("'fibers' is never negative" in m for m in messages)


def test_cli_stops_on_a_broken_file_with_folder_untouched(lab, tmp_path, capsys):
    (lab / "cell05.tif").write_bytes((lab / "cell05.tif").read_bytes()[:300])       # truncated
    before = folder_digest(lab)
    argv = ["make-dataset", "--images", str(lab), "--labels", str(lab / "labels.csv"),
            "--output", str(tmp_path / "out"), "--crop-size", str(CROP)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cell05.tif" in err and "Traceback" not in err and "nothing was written" in err
    assert folder_digest(lab) == before
    assert not (tmp_path / "out").exists()
    tifffile.imwrite(lab / "cell05.tif", cell_image(np.random.default_rng(2)))    # the fix
    assert main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "split_inhouse.csv", "testing_inhouse.hdf5", "training_inhouse.hdf5", "validation_inhouse.hdf5"]


def test_failure_while_writing_leaves_no_file(lab, tmp_path, monkeypatch):
    calls = []
    original = inhouse._write_image

    def failing(*args):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        return original(*args)

    monkeypatch.setattr(inhouse, "_write_image", failing)
    with pytest.raises(OSError, match="disk full"):
        make_dataset(lab, lab / "labels.csv", tmp_path / "out", crop_size=CROP)
    assert list((tmp_path / "out").iterdir()) == []


def test_output_inside_the_images_folder_is_refused(lab):
    with pytest.raises(ArgumentError, match="outside the images folder"):
        make_dataset(lab, lab / "labels.csv", lab / "dataset", crop_size=CROP)
    assert not (lab / "dataset").exists()


def test_class_sub_folders(tmp_path):
    rng = np.random.default_rng(3)
    for folder, count in (("rings", 4), ("fibers", 4), ("negative", 4)):
        (tmp_path / "lab" / folder).mkdir(parents=True)
        for i in range(count):
            tifffile.imwrite(tmp_path / "lab" / folder / f"{folder}{i}.tif", cell_image(rng))
    report = validate_folder(tmp_path / "lab", crop_size=CROP)
    assert report.ok, str(report)
    assert report.class_names == ("fibers", "rings")
    labels = {r.name: r.labels for r in report.records}
    assert labels["rings/rings0.tif"] == (0, 1) and labels["negative/negative2.tif"] == (0, 0)
    tifffile.imwrite(tmp_path / "lab" / "stray.tif", cell_image(rng))
    tifffile.imwrite(tmp_path / "lab" / "fibers" / "rings1.tif", cell_image(rng))
    problems = {p.file: p.message for p in validate_folder(tmp_path / "lab", crop_size=CROP).errors}
    assert "not in a class sub-folder" in problems["stray.tif"]
    assert "duplicate" in problems["rings/rings1.tif"]


def test_mask_folder_sets_the_foreground(lab, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(12):
        mask = np.zeros((80, 96), np.uint8)
        mask[: 40 + i, :] = 255
        tifffile.imwrite(masks / f"cell{i:02d}.tif", mask)
    paths = make_dataset(lab, lab / "labels.csv", tmp_path / "out", masks=masks, crop_size=CROP)
    with h5py.File(paths["training"], "r") as file:
        for group in file.values():
            i = int(group.attrs["source"][4:6])
            assert group["label"][0, -1].sum() == (40 + i) * 96
    (masks / "cell03.tif").unlink()
    tifffile.imwrite(masks / "cell04.tif", np.ones((10, 10), np.uint8))
    problems = {p.file: p.message for p in validate_folder(lab, lab / "labels.csv", masks=masks,
                                                            crop_size=CROP).errors}
    assert "no mask" in problems["cell03.tif"]
    assert "mask cell04.tif is 10x10 but the image is 80x96" in problems["cell04.tif"]


def test_stacks_need_a_choice_and_accept_one(lab, tmp_path):
    tifffile.imwrite(lab / "cell06.tif", np.stack([cell_image(np.random.default_rng(k)) for k in range(3)]),
                     photometric="minisblack")
    report = validate_folder(lab, lab / "labels.csv", crop_size=CROP)
    assert any("stack of 3 planes" in p.message for p in report.errors)
    assert validate_folder(lab, lab / "labels.csv", crop_size=CROP, projection="max").ok


def test_image_without_enough_foreground_is_a_warning(lab):
    tifffile.imwrite(lab / "cell06.tif", np.zeros((80, 96), np.uint16))
    report = validate_folder(lab, lab / "labels.csv", crop_size=CROP)
    assert report.ok
    assert any(p.file == "cell06.tif" and "adds nothing" in p.message for p in report.warnings)


@settings(max_examples=150, deadline=None)
@given(labels=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=3, max_size=60),
       seed=st.integers(0, 2**16))
def test_split_counts_and_stratification(labels, seed):
    assigned = split_images(labels, (0.7, 0.15, 0.15), seed)
    n = len(labels)
    counts = np.bincount(assigned, minlength=3)
    assert counts.sum() == n and (counts >= 1).all()
    assert abs(counts[0] - 0.7 * n) <= 2
    np.testing.assert_array_equal(assigned, split_images(labels, (0.7, 0.15, 0.15), seed))
    table = np.array(labels)
    for c in range(table.shape[1]):        # positives and negatives of each class spread like the images
        for group in (table[:, c] == 1, table[:, c] == 0):
            for s in range(3):
                expected = group.sum() * counts[s] / n
                assert abs(np.count_nonzero(assigned[group] == s) - expected) <= 2, (c, s, expected)


def test_split_puts_both_labels_of_every_class_in_every_split():
    labels = [[(1, 0), (0, 1), (1, 1), (0, 0)][i % 4] for i in range(12)]
    for seed in range(10):
        assigned = split_images(labels, seed=seed)
        for s in range(3):
            chosen = np.array(labels)[assigned == s]
            assert chosen.any(axis=0).all() and (1 - chosen).any(axis=0).all(), (seed, s, chosen)


def test_split_needs_enough_images():
    with pytest.raises(DatasetError, match="cannot fill 3 splits"):
        split_images([[1], [0]])
    assert np.bincount(split_images([[1], [0]], (0.5, 0.5, 0)), minlength=3).tolist() == [1, 1, 0]


def test_colour_images_with_channels_3(tmp_path):
    rng = np.random.default_rng(4)
    (tmp_path / "lab").mkdir()
    rows = ["filename,parasite"]
    for i in range(6):
        rgb = np.stack([cell_image(rng, np.uint8)] * 3, axis=-1)
        tifffile.imwrite(tmp_path / "lab" / f"smear{i}.tif", rgb, photometric="rgb")
        rows.append(f"smear{i}.tif,{i % 2}")
    (tmp_path / "lab" / "labels.csv").write_text("\n".join(rows) + "\n")
    assert not validate_folder(tmp_path / "lab", tmp_path / "lab" / "labels.csv", crop_size=CROP).ok
    paths = make_dataset(tmp_path / "lab", tmp_path / "lab" / "labels.csv", tmp_path / "out",
                         crop_size=CROP, channels=3)
    with h5py.File(paths["training"], "r") as file:
        group = next(iter(file.values()))
        assert group["data"].shape == (1, 3, 80, 96) and group["label"].shape == (1, 2, 80, 96)
    crops = CropDataset(paths["training"], size=CROP)
    assert crops.in_channels == 3 and crops[0][0].shape == (3, CROP, CROP)


def test_spreadsheet_style_csv(lab):
    rows = ["filename;rings;fibers", ""] + [f"./cell{i:02d}.tif;{i % 2}.0;{(i // 2) % 2}" for i in range(12)]
    rows[5] = "cell03.tif;1;2"
    (lab / "labels.csv").write_text("\r\n".join(rows) + "\r\n", encoding="utf-8-sig")
    report = validate_folder(lab, lab / "labels.csv", crop_size=CROP)
    assert [(p.file, p.message) for p in report.errors] == [
        ("cell03.tif", "label not 0/1 (fibers='2') on labels.csv line 6")]
    assert {r.name: r.labels for r in report.records}["cell05.tif"] == (1, 0)


def test_same_pixels_under_two_names_is_a_warning(lab):
    (lab / "copy_of_cell02.tif").write_bytes((lab / "cell02.tif").read_bytes())
    with open(lab / "labels.csv", "a") as handle:
        handle.write("copy_of_cell02.tif,0,1\n")
    report = validate_folder(lab, lab / "labels.csv", crop_size=CROP)
    assert report.ok
    assert [(p.file, p.message.split(";")[0]) for p in report.warnings] == [
        ("copy_of_cell02.tif", "duplicate: same pixels as cell02.tif")]
