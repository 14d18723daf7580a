"""Dataset readers without torchvision: MNIST idx files, CIFAR-10 python batches or npz, sklearn digits.

Every reader returns raw arrays: ``images`` uint8 (N, H, W, C) (digits: float64 in [0, 16]) and
``labels`` int64 (N,). :func:`teamattack.data.load` turns them into float32 NCHW tensors in [0, 1].

Where the files are looked for (first hit wins):

- MNIST: ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (torchvision's
  layout; the uncompressed file is preferred when both exist), also ``<root>/MNIST/`` and ``<root>/``.
- CIFAR-10: ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch}`` (the official python
  pickles, as torchvision downloads them), else the npz files ``<root>/cifar10_train.npz`` and
  ``<root>/cifar10_test_subset/cifar10_test_first1017.npz`` (the latter also directly in ``<root>``;
  it holds only the first 1017 test images, with all 10000 labels, of which the first 1017 are used).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np

ENV_VAR = "TEAMATTACK_DATA"
# used when neither root= nor $TEAMATTACK_DATA is given: a fixed folder of the user's, never the
# current directory (whose files may come from anywhere): $XDG_DATA_HOME/teamattack, by default
# ~/.local/share/teamattack
DEFAULT_ROOT_NAME = "teamattack"

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# md5 of the official .gz files and of their uncompressed contents
MNIST_FILES = {
    ("train", "images"): ("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                          "6bbc9ace898e44ae57da46a324031adb"),
    ("train", "labels"): ("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432",
                          "a25bea736e30d166cdddb491f175f624"),
    ("test", "images"): ("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3",
                         "2646ac647ad5339dbf082846283269ea"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c",
                         "27ae3e4e09519cfbb04c329615203637"),
}

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_TGZ_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_BATCHES = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR10_TRAIN_NPZ = "cifar10_train.npz"
CIFAR10_TEST_NPZ = ("cifar10_test_subset/cifar10_test_first1017.npz", "cifar10_test_first1017.npz")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

DIGITS_TEST_FRACTION = 1 / 3
DIGITS_SPLIT_SEED = 0


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where they were looked for; the message says where and how to get them."""


def verify_md5(path: str | os.PathLike, md5: str, chunk: int = 1 << 20) -> bool:
    """True when the file's md5 equals ``md5`` (hex)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest() == md5.lower()


def default_root() -> Path:
    """The data root used without root= and $TEAMATTACK_DATA: ``$XDG_DATA_HOME/teamattack``
    (``~/.local/share/teamattack``), never the current directory."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join("~", ".local", "share")
    return Path(base).expanduser() / DEFAULT_ROOT_NAME


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$TEAMATTACK_DATA``, else :func:`default_root` (not the current directory)."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return default_root()


def _root_hint(root: Path) -> str:
    return (f"Data root: {root.resolve()} (set it with root=..., the CLI option --data-root, or the "
            f"environment variable {ENV_VAR}; default {default_root()}).")


# ---------------------------------------------------------------------------------------------- MNIST
def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: not an idx file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file (magic {data[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(data) - offset != count:
        raise ValueError(f"{path}: expected {count} bytes of data after the header, found {len(data) - offset} "
                         "(truncated or corrupted file; check its md5 with teamattack.data.verify_md5)")
    return np.frombuffer(data, dtype=np.uint8, count=count, offset=offset).reshape(dims)


def mnist_dirs(root: Path) -> list[Path]:
    return [root / "MNIST" / "raw", root / "MNIST", root]


def _find_mnist_file(root: Path, split: str, kind: str) -> Path:
    base = MNIST_FILES[(split, kind)][0]
    dirs = mnist_dirs(root)
    for d in dirs:
        for name in (base, base + ".gz"):
            if (d / name).is_file():
                return d / name
    lines = "\n".join(f"  {MNIST_MIRRORS[0]}{b}.gz  md5 {gz}" for (b, gz, _) in MNIST_FILES.values())
    raise DatasetNotFoundError(
        f"MNIST file {base}[.gz] not found. Looked in:\n"
        + "\n".join(f"  {d.resolve()}" for d in dirs)
        + f"\n{_root_hint(root)}\n"
        "Put the four official files in <root>/MNIST/raw/ (gzipped or not). If you are online:\n"
        + lines
        + f"\n(mirror of {MNIST_MIRRORS[1]}; check each with teamattack.data.verify_md5(path, md5)). "
        "Or use the embedded dataset 'digits', which needs no files."
    )


def read_mnist(root: Path, split: str, labels_only: bool = False) -> tuple[np.ndarray | None, np.ndarray]:
    """MNIST idx files -> (images uint8 (N,28,28,1) or None, labels int64 (N,))."""
    labels = _read_idx(_find_mnist_file(root, split, "labels")).astype(np.int64)
    if labels_only:
        return None, labels
    images = _read_idx(_find_mnist_file(root, split, "images"))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images[..., None], labels


# ---------------------------------------------------------------------------------------------- CIFAR-10
class UnsafeDataError(ValueError):
    """A data file that will not be read because it could run code or is not the official file."""


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds only builtin containers, strings, numbers and numpy arrays.

    Any other global a pickle asks for (``os.system``, ``builtins.eval``, ...) raises
    :class:`UnsafeDataError` before it is looked up, so a crafted file cannot run code.
    """

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"), ("builtins", "complex"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 spell bytes
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise UnsafeDataError(f"the pickle asks for {module}.{name}; only numpy arrays and builtin "
                                  "containers are read")
        return super().find_class(module, name)


def read_pickled_arrays(path: str | os.PathLike) -> object:
    """A pickle of builtin containers and numpy arrays, read with :class:`ArrayUnpickler`."""
    with open(path, "rb") as f:
        try:
            return ArrayUnpickler(f, encoding="bytes").load()
        except UnsafeDataError as err:
            raise UnsafeDataError(f"{path}: {err}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
            raise ValueError(f"{path}: not a readable CIFAR-10 python batch ({err})") from None


def _unpickle_official_batch(path: Path) -> dict:
    # The official CIFAR-10 python batches are pickles of a dict of numpy arrays / lists. They are
    # read with ArrayUnpickler (only arrays and builtins: a crafted file cannot run code), and a
    # file whose md5 is not the official one is named in a warning.
    d = read_pickled_arrays(path)
    if not isinstance(d, dict):
        raise ValueError(f"{path}: not a CIFAR-10 python batch (a {type(d).__name__}, not a dict)")
    md5 = CIFAR10_BATCHES.get(path.name)
    if md5 is not None and not verify_md5(path, md5):
        warnings.warn(f"{path}: its md5 is not the official CIFAR-10 file's ({md5}); read as arrays only",
                      stacklevel=3)
    return d


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle_official_batch(path)
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: not a CIFAR-10 python batch (no 'data'/'labels')")
    images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)


def _cifar_not_found(root: Path, split: str, looked: list[Path]) -> DatasetNotFoundError:
    md5s = "\n".join(f"    {k}  md5 {v}" for k, v in CIFAR10_BATCHES.items())
    return DatasetNotFoundError(
        f"CIFAR-10 {split} set not found. Looked for:\n"
        + "\n".join(f"  {p.resolve()}" for p in looked)
        + f"\n{_root_hint(root)}\n"
        f"If you are online: download {CIFAR10_URL} (md5 {CIFAR10_TGZ_MD5}) and extract it in the data "
        f"root, giving <root>/{CIFAR10_DIR}/ with these files (check with teamattack.data.verify_md5):\n"
        + md5s
        + "\nOr use the embedded dataset 'digits', which needs no files."
    )


def read_cifar10(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 -> (images uint8 (N,32,32,3) RGB, labels int64 (N,)).

    The official python batches are used when present; otherwise the npz files (whose test set is
    only the first 1017 official test images).
    """
    batch_dir = root / CIFAR10_DIR
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    paths = [batch_dir / n for n in names]
    if all(p.is_file() for p in paths):
        parts = [_cifar_batch(p) for p in paths]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    npz_names = (CIFAR10_TRAIN_NPZ,) if split == "train" else CIFAR10_TEST_NPZ
    npzs = [root / n for n in npz_names]
    for p in npzs:
        if p.is_file():
            with np.load(p, allow_pickle=False) as d:
                images = np.asarray(d["images"], dtype=np.uint8)
                labels = np.asarray(d["labels"], dtype=np.int64)[: images.shape[0]]
            return images, labels
    raise _cifar_not_found(root, split, [batch_dir / n for n in names] + npzs)


# ---------------------------------------------------------------------------------------------- digits
def digits_split_indices(n_total: int = 1797) -> tuple[np.ndarray, np.ndarray]:
    """The fixed split of sklearn's digits: a RandomState(0) permutation, the first third is test."""
    perm = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(n_total)
    n_test = int(n_total * DIGITS_TEST_FRACTION)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def read_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's bundled 8x8 digits -> (images float64 (N,8,8,1) in [0,16], labels int64)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    train_idx, test_idx = digits_split_indices(len(d.target))
    idx = train_idx if split == "train" else test_idx
    return d.images[idx][..., None], d.target[idx].astype(np.int64)
