"""Dataset readers: known facts of the real files (when present) and fake files written here."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from teamattack import data
from teamattack.data import readers

SHARED = Path(os.environ.get("TEAMATTACK_DATA") or Path(__file__).resolve().parents[2] / "shared" / "datasets")
HAS_MNIST = (SHARED / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").is_file() or (
    SHARED / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()
HAS_CIFAR_TEST = (SHARED / "cifar10_test_subset" / "cifar10_test_first1017.npz").is_file()
HAS_CIFAR_TRAIN = (SHARED / "cifar10_train.npz").is_file()


# ------------------------------------------------------------------------------------ real files
@pytest.mark.skipif(not HAS_MNIST, reason=f"MNIST not found under {SHARED}")
def test_mnist_labels_known_facts():
    _, ytr = readers.read_mnist(SHARED, "train", labels_only=True)
    _, yte = readers.read_mnist(SHARED, "test", labels_only=True)
    assert len(ytr) == 60000 and len(yte) == 10000
    assert ytr[0] == 5 and yte[0] == 7
    assert np.bincount(ytr).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.mark.skipif(not HAS_MNIST, reason=f"MNIST not found under {SHARED}")
def test_mnist_test_images():
    x, y = data.load("mnist", "test", root=SHARED)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y[:5].tolist() == [7, 2, 1, 0, 4]


@pytest.mark.skipif(not HAS_CIFAR_TEST, reason=f"CIFAR-10 test npz not found under {SHARED}")
def test_cifar10_test_subset():
    x, y = data.load("cifar10", "test", root=SHARED)
    assert x.shape == (1017, 3, 32, 32) and y.shape == (1017,)
    assert y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


@pytest.mark.skipif(not HAS_CIFAR_TRAIN, reason=f"CIFAR-10 train npz not found under {SHARED}")
def test_cifar10_train_npz():
    # fast: read the labels and only the header of the images (the reader itself is tested on fakes)
    with np.load(SHARED / "cifar10_train.npz", allow_pickle=False) as d:
        labels = d["labels"]
        with d.zip.open("images.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
    assert shape == (50000, 32, 32, 3) and dtype == np.uint8
    assert labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert np.bincount(labels).tolist() == [5000] * 10


# ------------------------------------------------------------------------------------ fake files
def _write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    payload = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


def _fake_mnist(root: Path, gz: bool, n_train: int = 12, n_test: int = 5, seed: int = 0):
    rng = np.random.RandomState(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        imgs = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        labs = rng.randint(0, 10, size=n).astype(np.uint8)
        suffix = ".gz" if gz else ""
        _write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", imgs, gz)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labs, gz)
        arrays[split] = (imgs, labs)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_fake_mnist_roundtrip(tmp_path, gz):
    arrays = _fake_mnist(tmp_path, gz)
    for split in ("train", "test"):
        x, y = data.load("mnist", split, root=tmp_path)
        imgs, labs = arrays[split]
        assert x.shape == (len(labs), 1, 28, 28)
        assert torch.equal((x[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(imgs))
        assert y.tolist() == labs.tolist()


def test_truncated_idx_is_a_clear_error(tmp_path):
    _fake_mnist(tmp_path, gz=False)
    f = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        data.load("mnist", "test", root=tmp_path)


def _fake_cifar(root: Path, per_batch: int = 4, seed: int = 0):
    rng = np.random.RandomState(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        flat = rng.randint(0, 256, size=(per_batch, 3072)).astype(np.uint8)
        labels = rng.randint(0, 10, size=per_batch).tolist()
        with open(d / name, "wb") as f:  # the official format: a pickled dict with bytes keys
            pickle.dump({b"batch_label": name.encode(), b"data": flat, b"labels": labels}, f, protocol=2)
        out[name] = (flat, labels)
    return out


def test_fake_cifar_python_batches(tmp_path):
    batches = _fake_cifar(tmp_path)
    x, y = data.load("cifar10", "train", root=tmp_path)
    assert x.shape == (20, 3, 32, 32)
    flat, labels = batches["data_batch_2"]
    # official layout: 1024 red, then 1024 green, then 1024 blue values, each row-major
    expect = torch.from_numpy(flat.reshape(-1, 3, 32, 32).astype(np.float32) / 255)
    assert torch.allclose(x[4:8], expect)
    assert y[4:8].tolist() == labels
    xt, yt = data.load("cifar10", "test", root=tmp_path)
    assert xt.shape == (4, 3, 32, 32) and yt.tolist() == batches["test_batch"][1]


def test_fake_cifar_npz_test_uses_first_labels(tmp_path):
    (tmp_path / "cifar10_test_subset").mkdir()
    imgs = np.zeros((3, 32, 32, 3), np.uint8)
    imgs[1, 0, 0, 2] = 255  # blue channel of the top-left pixel of image 1
    np.savez(tmp_path / "cifar10_test_subset" / "cifar10_test_first1017.npz", images=imgs,
             labels=np.arange(10, dtype=np.uint8), classes=np.array(readers.CIFAR10_CLASSES))
    x, y = data.load("cifar10", "test", root=tmp_path)
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [0, 1, 2]
    assert float(x[1, 2, 0, 0]) == 1.0 and float(x.sum()) == 1.0


# ------------------------------------------------------------------------------------ digits, API
def test_digits_shapes_range_and_split():
    xtr, ytr = data.load("digits", "train")
    xte, yte = data.load("digits", "test")
    assert xtr.shape == (1198, 1, 8, 8) and xte.shape == (599, 1, 8, 8)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert float(xtr.min()) == 0.0 and float(xtr.max()) == 1.0
    tr, te = data.digits_split_indices(1797)
    assert len(set(tr) | set(te)) == 1797 and not set(tr) & set(te)
    assert data.input_shape("digits") == (1, 8, 8) and data.num_classes("digits") == 10


def test_load_subset_reproducible():
    a, ya = data.load("digits", "test", n=50, seed=3)
    b, yb = data.load("digits", "test", n=50, seed=3)
    c, _ = data.load("digits", "test", n=50, seed=4)
    assert torch.equal(a, b) and torch.equal(ya, yb) and not torch.equal(a, c)
    x, y, idx = data.load("digits", "test", n=10, seed=3, return_indices=True)
    full_x, full_y = data.load("digits", "test")
    assert torch.equal(full_x[idx], x) and torch.equal(full_y[idx], y)
    with pytest.raises(ValueError):
        data.load("digits", "test", n=10_000)


def test_load_returns_a_copy():
    x, _ = data.load("digits", "test")
    x.zero_()
    assert float(data.load("digits", "test")[0].max()) == 1.0


def test_correctly_classified():
    x, y = data.load("digits", "test", n=40)

    class Oracle(nn.Module):  # right on even-indexed... labels: predicts class 0 always
        def forward(self, inp):
            out = torch.zeros(len(inp), 10)
            out[:, 0] = 1.0
            return out

    xc, yc = data.correctly_classified(Oracle(), x, y, batch_size=7)
    assert len(yc) == int((y == 0).sum()) and bool((yc == 0).all())
    assert torch.equal(xc, x[y == 0])
    _, _, mask = data.correctly_classified(Oracle(), x, y, return_mask=True)
    assert torch.equal(mask, y == 0)


def test_missing_root_is_one_clear_error(tmp_path):
    bad = tmp_path / "nowhere"
    for name in ("mnist", "cifar10"):
        with pytest.raises(data.DatasetNotFoundError) as e:
            data.load(name, "test", root=bad)
        msg = str(e.value)
        assert isinstance(e.value, FileNotFoundError)
        assert str(bad) in msg and "TEAMATTACK_DATA" in msg and "md5" in msg and "https://" in msg
    assert not data.available("mnist", root=bad)


def test_env_var_root(tmp_path, monkeypatch):
    _fake_mnist(tmp_path, gz=True, seed=5)
    monkeypatch.setenv("TEAMATTACK_DATA", str(tmp_path))
    x, y = data.load("mnist", "train")
    assert x.shape == (12, 1, 28, 28)
    assert data.resolve_root() == tmp_path


def test_unknown_names():
    with pytest.raises(ValueError):
        data.load("imagenet", "test")
    with pytest.raises(ValueError):
        data.load("digits", "val")


def test_verify_md5(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert data.verify_md5(f, "900150983cd24fb0d6963f7d28e17f72")
    assert not data.verify_md5(f, "0" * 32)
