import multiprocessing
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mfm_core.default_plugins
from mfm_core import Registry
from mfm_core.datasets import Cifar10Dataset, ImageFolderDataset, ImageNetNpzDataset
from mfm_core.datasets.images import imagenet
from mfm_core.errors import ConfigError
from mfm_core.protocols import IndexedDataset
from tests.datasets.formats import write_cifar10, write_image_folder, write_imagenet_npz

pytestmark = pytest.mark.filterwarnings("ignore:.*official train batches:UserWarning")


def expected_item(rows: np.ndarray, index: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(rows[index].reshape(shape).astype(np.float32)) / 127.5 - 1


def assert_items_match(dataset, rows: np.ndarray, labels: np.ndarray) -> None:
    assert len(dataset) == len(rows)
    for index in (0, len(rows) // 2, len(rows) - 1, -1):
        image, label = dataset[index]
        assert image.dtype == torch.float32 and image.shape == dataset.shape
        torch.testing.assert_close(image, expected_item(rows, index, dataset.shape), rtol=0, atol=0)
        assert label == labels[index]
    with pytest.raises(IndexError):
        dataset[len(rows)]


def assert_samples_reproducible(dataset) -> None:
    first = dataset.sample(6, torch.Generator().manual_seed(3))
    assert first.shape == (6, *dataset.shape) and first.dtype == torch.float32
    assert -1 <= first.min() and first.max() <= 1
    torch.testing.assert_close(first, dataset.sample(6, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, dataset.sample(6, torch.Generator().manual_seed(4)))


def assert_pickles_cheaply(dataset, limit: int) -> None:
    payload = pickle.dumps(dataset)
    assert len(payload) < limit
    copy = pickle.loads(payload)
    torch.testing.assert_close(copy[1][0], dataset[1][0])
    assert copy[1][1] == dataset[1][1]


def registry() -> Registry:
    registry = Registry(load_entry_points=False)
    registry.add_plugin(mfm_core.default_plugins)
    return registry


# ---- the scaling and the CHW order, shared by all formats ---------------------------------


def known_rows(resolution: int) -> np.ndarray:
    """Row 0: red plane 0, green plane 255, blue plane 0, 1, 2, ... (mod 256) in row-major
    order."""
    plane = resolution * resolution
    rows = np.zeros((2, 3 * plane), dtype=np.uint8)
    rows[0, plane : 2 * plane] = 255
    rows[0, 2 * plane :] = np.arange(plane) % 256
    return rows


def assert_known_pattern(image: torch.Tensor, resolution: int) -> None:
    assert torch.all(image[0] == -1) and torch.all(image[1] == 1)
    blue = (torch.arange(resolution * resolution) % 256).float().reshape(resolution, -1)
    torch.testing.assert_close(image[2], blue / 127.5 - 1, rtol=0, atol=0)


def test_imagenet_scaling_and_chw_order(tmp_path: Path) -> None:
    np.savez(tmp_path / "train_data_batch_1.npz", data=known_rows(4), labels=np.array([1, 1000]))
    dataset = ImageNetNpzDataset(root=str(tmp_path), resolution=4)
    assert_known_pattern(dataset[0][0], 4)
    assert [dataset[0][1], dataset[1][1]] == [0, 999]


def test_cifar_scaling_and_chw_order(tmp_path: Path) -> None:
    write_cifar10(tmp_path, 2)
    with open(tmp_path / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": known_rows(32), b"labels": [9, 0]}, handle, protocol=2)
    image, label = Cifar10Dataset(root=str(tmp_path))[0]
    assert_known_pattern(image, 32)
    assert label == 9


def test_image_folder_scaling_and_chw_order(tmp_path: Path) -> None:
    planes = known_rows(4)[0].reshape(3, 4, 4)
    Image.fromarray(planes.transpose(1, 2, 0)).save(tmp_path / "a.png")
    assert_known_pattern(ImageFolderDataset(root=str(tmp_path), resolution=4)[0][0], 4)


# ---- imagenet-npz -------------------------------------------------------------------------


def test_imagenet_train_and_val(tmp_path: Path) -> None:
    written = write_imagenet_npz(tmp_path, 8, n_per_batch=5, batches=3, val=4)
    train = ImageNetNpzDataset(root=str(tmp_path), resolution=8)
    assert isinstance(train, IndexedDataset)
    assert (train.shape, train.num_classes, train.hflip) == ((3, 8, 8), 1000, True)
    assert_items_match(train, written["train"][0], written["train"][1] - 1)
    val = ImageNetNpzDataset(root=str(tmp_path), resolution=8, split="val", hflip=False)
    assert_items_match(val, written["val"][0], written["val"][1] - 1)
    assert val.hflip is False
    assert_samples_reproducible(train)
    assert_pickles_cheaply(train, limit=2000)


def test_imagenet_through_a_dataloader_with_workers(tmp_path: Path) -> None:
    written = write_imagenet_npz(tmp_path, 4, 5, 2)
    dataset = ImageNetNpzDataset(root=str(tmp_path), resolution=4)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=[[3, 0, 9], [1]], num_workers=1)
    (images, labels), (image, label) = list(loader)
    assert (
        images.shape == (3, 3, 4, 4)
        and labels.tolist() == (written["train"][1][[3, 0, 9]] - 1).tolist()
    )
    torch.testing.assert_close(images[2], dataset[9][0])
    torch.testing.assert_close(image[0], dataset[1][0])


def test_imagenet_files_in_a_subdirectory(tmp_path: Path) -> None:
    written = write_imagenet_npz(tmp_path / "Imagenet8_train_npz", 8, 3, 2)
    dataset = ImageNetNpzDataset(root=str(tmp_path), resolution=8)
    assert_items_match(dataset, written["train"][0], written["train"][1] - 1)


def test_imagenet_warns_about_a_partial_training_set(tmp_path: Path) -> None:
    write_imagenet_npz(tmp_path, 4, 2, 2)
    with pytest.warns(UserWarning, match="2 of the 10 official train batches"):
        ImageNetNpzDataset(root=str(tmp_path), resolution=4)


def test_imagenet_cache_is_built_once_and_reused(tmp_path: Path, monkeypatch) -> None:
    write_imagenet_npz(tmp_path, 4, 3, 2)
    first = ImageNetNpzDataset(root=str(tmp_path), resolution=4)
    assert first.images_path == tmp_path / ".mfm-cache" / "imagenet4-train-images.npy"
    assert np.load(first.images_path, mmap_mode="r").shape == (6, 3, 4, 4)
    built = first.images_path.stat().st_mtime_ns

    def fail(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(imagenet, "_convert", fail)
    second = ImageNetNpzDataset(root=str(tmp_path), resolution=4)
    assert second.images_path.stat().st_mtime_ns == built
    torch.testing.assert_close(second[5][0], first[5][0])
    assert sorted(p.name for p in (tmp_path / ".mfm-cache").iterdir() if "tmp" in p.name) == []


def test_imagenet_cache_follows_a_changed_source(tmp_path: Path) -> None:
    write_imagenet_npz(tmp_path, 4, 3, 2, seed=0)
    before = ImageNetNpzDataset(root=str(tmp_path), resolution=4)
    old = before[4][0]
    written = write_imagenet_npz(tmp_path, 4, 3, 2, seed=1)
    after = ImageNetNpzDataset(root=str(tmp_path), resolution=4)
    assert_items_match(after, written["train"][0], written["train"][1] - 1)
    assert not torch.equal(after[4][0], old)
    torch.testing.assert_close(before[4][0], old)  # an open memory map keeps its old file


def test_imagenet_cache_dir(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "data"
    write_imagenet_npz(root, 4, 2, 1, val=2)
    dataset = ImageNetNpzDataset(
        root=str(root), resolution=4, split="val", cache_dir=str(tmp_path / "c")
    )
    assert dataset.images_path == tmp_path / "c" / "imagenet4-val-images.npy"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(imagenet.os, "access", lambda path, mode: False)  # a read-only root
    dataset = ImageNetNpzDataset(root=str(root), resolution=4, split="val")
    assert dataset.images_path.parent.parent == tmp_path / "xdg" / "mfm"
    assert not (root / ".mfm-cache").exists()


def test_imagenet_unwritable_cache_dir(tmp_path: Path) -> None:
    write_imagenet_npz(tmp_path, 4, 2, 1)
    (tmp_path / "file").touch()
    with pytest.raises(ValueError, match="cannot write the data cache in .*; set cache_dir"):
        ImageNetNpzDataset(root=str(tmp_path), resolution=4, cache_dir=str(tmp_path / "file" / "c"))


def _build_and_count(root: str, log: str) -> None:
    real = imagenet._convert

    def counted(*args) -> None:
        with open(log, "a") as handle:
            handle.write("converted\n")
        real(*args)

    imagenet._convert = counted
    ImageNetNpzDataset(root=root, resolution=8)


def test_imagenet_concurrent_processes_convert_once(tmp_path: Path) -> None:
    write_imagenet_npz(tmp_path / "data", 8, 200, 2)
    log = tmp_path / "log"
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_build_and_count, args=(str(tmp_path / "data"), str(log)))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert log.read_text() == "converted\n"


def write_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    ("setup", "params", "message"),
    [
        (
            lambda root: None,
            {"root": "missing"},
            "missing' does not exist; expected a directory holding the official",
        ),
        (lambda root: (root / "f").touch(), {"root": "f"}, r"f' is a file"),
        (lambda root: None, {"root": ""}, "root is not set"),
        (lambda root: None, {}, r"no train_data_batch_\*\.npz under .*; expected the official"),
        (
            lambda root: write_imagenet_npz(root, 4, 2, 1),
            {"split": "val"},
            "no val_data.npz under",
        ),
        (
            lambda root: [
                write_imagenet_npz(root, 4, 2, 3),
                (root / "train_data_batch_2.npz").unlink(),
            ],
            {},
            "has train_data_batch_3.npz but not train_data_batch_2.npz",
        ),
        (
            lambda root: write_imagenet_npz(root, 8, 2, 1),
            {},
            r"rows of 'data' hold 192 values \(8x8 images\), but resolution = 4 expects 48",
        ),
        (
            lambda root: write_npz(
                root / "train_data_batch_1.npz", data=np.zeros((2, 48), np.uint8)
            ),
            {},
            r"holds arrays \['data'\]; expected 'data' and 'labels'",
        ),
        (
            lambda root: write_npz(
                root / "train_data_batch_1.npz", data=np.zeros((2, 48)), labels=np.ones(2, int)
            ),
            {},
            "'data' is float64 of shape",
        ),
        (
            lambda root: write_npz(
                root / "train_data_batch_1.npz",
                data=np.zeros((2, 48), np.uint8),
                labels=np.ones(3, int),
            ),
            {},
            "expected 2 integers, one per row",
        ),
        (
            lambda root: write_npz(
                root / "train_data_batch_1.npz",
                data=np.zeros((2, 48), np.uint8),
                labels=np.zeros(2, int),
            ),
            {},
            r"labels range over 0\.\.0; expected 1\.\.1000",
        ),
        (
            lambda root: (root / "train_data_batch_1.npz").write_bytes(b"not a zip"),
            {},
            r"train_data_batch_1\.npz is not a readable \.npz file",
        ),
    ],
)
def test_imagenet_bad_input_says_what_was_expected_where(
    tmp_path: Path, setup, params: dict, message: str
) -> None:
    setup(tmp_path)
    root = params.get("root")
    params = {
        "resolution": 4,
        **params,
        "root": str(tmp_path) if root is None else root and str(tmp_path / root),
    }
    with pytest.raises(ConfigError, match=rf"^\$\.data\.target: .*{message}"):
        registry().create("dataset", "imagenet-npz", params, path="$.data.target")


# ---- cifar10 ------------------------------------------------------------------------------


@pytest.mark.parametrize("nested", [False, True])
def test_cifar_train_and_test(tmp_path: Path, nested: bool) -> None:
    written = write_cifar10(tmp_path / "cifar-10-batches-py" if nested else tmp_path, 3)
    train = Cifar10Dataset(root=str(tmp_path))
    assert isinstance(train, IndexedDataset)
    assert (train.shape, train.num_classes, train.hflip) == ((3, 32, 32), 10, True)
    assert_items_match(train, *written["train"])
    test = Cifar10Dataset(root=str(tmp_path), split="test")
    assert_items_match(test, *written["test"])
    assert_samples_reproducible(train)
    assert_pickles_cheaply(train, limit=100_000)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo should not run",))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: (root / "data_batch_3").unlink(), "has no data_batch_3; expected the CIFAR"),
        (
            lambda root: (root / "data_batch_2").write_bytes(b"\x80\x02garbage"),
            "data_batch_2 is not a readable CIFAR-10 pickle",
        ),
        (
            lambda root: (root / "data_batch_1").write_bytes(pickle.dumps(RunsCode())),
            "refusing to load",
        ),
        (
            lambda root: (root / "data_batch_1").write_bytes(pickle.dumps({b"data": 1})),
            "expected a dict with b'data' and b'labels'",
        ),
        (
            lambda root: (root / "data_batch_1").write_bytes(
                pickle.dumps({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]})
            ),
            "rows of b'data' hold 1024 values; expected 3072",
        ),
        (
            lambda root: (root / "data_batch_1").write_bytes(
                pickle.dumps({b"data": np.zeros((2, 3072)), b"labels": [0, 1]})
            ),
            "not a 2-D uint8 array",
        ),
        (
            lambda root: (root / "data_batch_1").write_bytes(
                pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
            ),
            r"labels range over 0\.\.10",
        ),
    ],
)
def test_cifar_bad_input_says_what_was_expected_where(tmp_path: Path, damage, message) -> None:
    write_cifar10(tmp_path, 2)
    damage(tmp_path)
    with pytest.raises(ConfigError, match=rf"^\$\.data\.target: .*{message}"):
        registry().create("dataset", "cifar10", {"root": str(tmp_path)}, path="$.data.target")


def test_cifar_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist; expected a directory holding the CIFAR"):
        Cifar10Dataset(root=str(tmp_path / "nowhere"))


# ---- image-folder -------------------------------------------------------------------------


def test_image_folder_classes_are_sorted_folder_names(tmp_path: Path) -> None:
    written = write_image_folder(tmp_path, ["zebra", "ant", "cat"], 2, 8)
    (tmp_path / ".hidden").mkdir()
    dataset = ImageFolderDataset(root=str(tmp_path), resolution=8)
    assert isinstance(dataset, IndexedDataset)
    assert dataset.classes == ["ant", "cat", "zebra"]
    assert (dataset.shape, dataset.num_classes, dataset.hflip) == ((3, 8, 8), 3, True)
    assert len(dataset) == 6
    for index in range(6):
        image, label = dataset[index]
        path = dataset.files[index]
        assert label == dataset.classes.index(path.parent.name)
        torch.testing.assert_close(
            image, expected_item(written[path].transpose(2, 0, 1)[None], 0, (3, 8, 8))
        )
    assert_samples_reproducible(dataset)
    assert_pickles_cheaply(dataset, limit=5000)


def test_image_folder_without_classes_is_unlabelled(tmp_path: Path) -> None:
    write_image_folder(tmp_path, None, 3, 8, suffix=".JPEG")
    Image.new("LA", (8, 8)).save(tmp_path / "grey.png")
    (tmp_path / "empty").mkdir()
    dataset = ImageFolderDataset(root=str(tmp_path), resolution=8, hflip=False)
    assert (dataset.num_classes, dataset.classes, dataset.hflip, len(dataset)) == (
        None,
        [],
        False,
        4,
    )
    assert [dataset[i][1] for i in range(4)] == [-1] * 4
    assert dataset[3][0].shape == (3, 8, 8)


def test_image_folder_crops_the_centre_and_resizes(tmp_path: Path) -> None:
    pixels = np.zeros((8, 12, 3), dtype=np.uint8)
    pixels[:, :2] = 255  # columns outside the centred 8x8 square
    pixels[:, 10:] = 255
    pixels[:, 2:10, 1] = np.arange(8, dtype=np.uint8)[None, :] * 30
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    cropped = ImageFolderDataset(root=str(tmp_path), resolution=8)[0][0]
    torch.testing.assert_close(
        cropped, torch.from_numpy(pixels[:, 2:10].transpose(2, 0, 1).astype(np.float32)) / 127.5 - 1
    )
    small = ImageFolderDataset(root=str(tmp_path), resolution=4)[0][0]
    assert small.shape == (3, 4, 4)
    assert torch.all(small[0] == -1)  # the white side columns were cropped away, not resized in
    assert torch.all(small[1, :, 1:] > small[1, :, :-1])  # the green ramp survives


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: None, "no images found; expected images"),
        (
            lambda root: [write_image_folder(root, ["a"], 1, 4), (root / "b").mkdir()],
            r"class folders \['b'\] hold no images",
        ),
        (
            lambda root: [
                write_image_folder(root, ["a"], 1, 4),
                write_image_folder(root, None, 1, 4),
            ],
            "holds both class folders and images of its own",
        ),
    ],
)
def test_image_folder_bad_layout(tmp_path: Path, setup, message: str) -> None:
    setup(tmp_path)
    with pytest.raises(ConfigError, match=rf"^\$\.data\.target: .*{message}"):
        registry().create(
            "dataset",
            "image-folder",
            {"root": str(tmp_path), "resolution": 4},
            path="$.data.target",
        )


def test_image_folder_unreadable_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    dataset = ImageFolderDataset(root=str(tmp_path), resolution=4)
    with pytest.raises(ValueError, match=r"broken\.png is not a readable image"):
        dataset[0]
