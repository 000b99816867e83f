"""Binarised MNIST loading: every form of the file against the arrays read directly with np.load.

Downloads go to a local HTTP server on 127.0.0.1, never to the internet.
"""

import hashlib
import http.server
import shutil
import socket
import threading

import numpy as np
import pytest
import tensorflow as tf

from tfnf import datasets

SIZES = {"train": 50000, "valid": 10000, "test": 10000}
# Byte sizes of the published .amat files (TensorFlow Datasets, url_checksums/binarized_mnist.txt).
AMAT_BYTES = {"train": 78_400_000, "valid": 15_680_000, "test": 15_680_000}


def amat_text(x, sep=" ", newline="\n", trailing="", final_newline=True) -> bytes:
    """x [N, 784] written as .amat text, one image a line, in plain Python."""
    lines = [sep.join(str(int(v)) for v in row) + trailing for row in x]
    return (newline.join(lines) + (newline if final_newline else "")).encode()


def amat_bytes_fast(x) -> bytes:
    """The published layout "d d ... d\\n" of x [N, 784], built with NumPy (for the 50000-row
    split).
    """
    buf = np.full((x.shape[0], 2 * x.shape[1]), ord(" "), np.uint8)
    buf[:, 0::2] = x + ord("0")
    buf[:, -1] = ord("\n")
    return buf.tobytes()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No TFNF_DATA_DIR, a private KERAS_HOME, no proxy, and an origin nobody listens on."""
    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(datasets, "ORIGIN", f"http://127.0.0.1:{closed_port()}/")


@pytest.fixture
def subset(mnist_subset_path):
    with np.load(mnist_subset_path) as f:
        return {split: f[split] for split in datasets.SPLITS}


@pytest.fixture(scope="module")
def full(mnist_full_path):
    """The full arrays, read once with np.load: the reference for the tests of the full file."""
    with np.load(mnist_full_path) as f:
        return {split: f[split] for split in datasets.SPLITS}


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A file server on 127.0.0.1 over tmp_path/"www"; yields (root, list of requested paths)."""
    root = tmp_path / "www"
    root.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            if self.path.endswith("truncated.amat"):
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"0 1 " * 10)
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs=dict(poll_interval=0.01), daemon=True
    )
    thread.start()
    monkeypatch.setattr(datasets, "ORIGIN", f"http://127.0.0.1:{httpd.server_address[1]}/")
    yield root, requests
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def serve(root, monkeypatch, split, x) -> str:
    """Put x as binarized_mnist_{split}.amat on the server and make it the expected hash; its
    SHA-256.
    """
    data = amat_text(x)
    (root / f"binarized_mnist_{split}.amat").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(datasets.SHA256, split, digest)
    return digest


# --- the full file -----------------------------------------------------------------------------


@pytest.mark.parametrize("split", datasets.SPLITS)
def test_full_file_shapes_and_values(mnist_full_path, full, split):
    x = datasets.load_binarized_mnist(split, mnist_full_path)
    assert x.shape == (SIZES[split], 784) and x.dtype == np.uint8
    assert x.min() == 0 and x.max() == 1  # integers, so every value is 0 or 1
    np.testing.assert_array_equal(x, full[split])


def test_full_file_is_the_published_amat_and_hashes_are_right(full, tmp_path):
    """The shared arrays, written as .amat text, are byte for byte the files whose hashes we pin."""
    arrays = full
    for split, x in arrays.items():
        data = amat_bytes_fast(x)
        assert len(data) == AMAT_BYTES[split]
        assert hashlib.sha256(data).hexdigest() == datasets.SHA256[split]
    path = tmp_path / "binarized_mnist_train.amat"
    path.write_bytes(amat_bytes_fast(arrays["train"]))
    np.testing.assert_array_equal(datasets.load_binarized_mnist("train", path), arrays["train"])


def test_subset_is_the_head_of_the_full_file(full, subset):
    for split, x in subset.items():
        np.testing.assert_array_equal(x, full[split][: len(x)])


# --- local files -------------------------------------------------------------------------------


def test_npz_npy_and_amat_load_identically_as_files_and_directories(
    mnist_subset_path, subset, tmp_path
):
    npz_dir, amat_dir, npy_dir = tmp_path / "npz", tmp_path / "amat", tmp_path / "npy"
    for d in (npz_dir, amat_dir, npy_dir):
        d.mkdir()
    shutil.copy(mnist_subset_path, npz_dir / "binarized_mnist.npz")
    for split, expected in subset.items():
        (amat_dir / f"binarized_mnist_{split}.amat").write_bytes(amat_text(expected))
        np.save(npy_dir / f"binarized_mnist_{split}.npy", expected)
        for path in (
            mnist_subset_path,
            npz_dir,
            amat_dir,
            amat_dir / f"binarized_mnist_{split}.amat",
            npy_dir,
            str(npy_dir / f"binarized_mnist_{split}.npy"),
        ):
            x = datasets.load_binarized_mnist(split, path, download=False)
            assert x.dtype == np.uint8, path
            np.testing.assert_array_equal(x, expected, err_msg=str(path))


def test_published_layout_is_read_without_loadtxt(subset, tmp_path, monkeypatch):
    path = tmp_path / "binarized_mnist_valid.amat"
    path.write_bytes(amat_text(subset["valid"]))

    def fail(*args, **kwargs):
        raise AssertionError("the published layout should not need np.loadtxt")

    monkeypatch.setattr(datasets.np, "loadtxt", fail)
    np.testing.assert_array_equal(datasets.load_binarized_mnist("valid", path), subset["valid"])


@pytest.mark.parametrize(
    "layout",
    [
        dict(newline="\r\n"),
        dict(sep="\t"),
        dict(trailing=" "),
        dict(final_newline=False),
        dict(sep="  ", trailing="\t"),
    ],
    ids=["crlf", "tabs", "trailing-space", "no-final-newline", "mixed"],
)
def test_amat_in_other_whitespace_layouts(subset, tmp_path, layout):
    expected = subset["valid"][:50]
    path = tmp_path / "digits.amat"
    path.write_bytes(amat_text(expected, **layout))
    np.testing.assert_array_equal(datasets.load_binarized_mnist("valid", path), expected)


def test_data_dir_env_and_precedence_path_then_env_then_cache(monkeypatch, subset, tmp_path):
    """Three different arrays in the three places: each is read exactly when the ones before it
    are absent.
    """
    a, b, c = subset["test"], 1 - subset["test"], subset["test"][::-1]
    env_dir, cache_dir = tmp_path / "env", tmp_path / "cache"
    env_dir.mkdir()
    cache_dir.mkdir()
    path = tmp_path / "mine.npz"
    np.savez(path, test=a)
    np.savez(env_dir / "binarized_mnist.npz", test=b)
    np.save(cache_dir / "binarized_mnist_test.npy", c)

    np.testing.assert_array_equal(datasets.load_binarized_mnist("test", cache_dir=cache_dir), c)
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(env_dir))
    np.testing.assert_array_equal(datasets.load_binarized_mnist("test", cache_dir=cache_dir), b)
    np.testing.assert_array_equal(
        datasets.load_binarized_mnist("test", path, cache_dir=cache_dir), a
    )
    # An env directory without the file falls through to the cache.
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    np.testing.assert_array_equal(
        datasets.load_binarized_mnist("test", cache_dir=cache_dir, download=False), c
    )


def test_in_a_directory_npz_comes_before_npy_before_amat(subset, tmp_path):
    a, b, c = subset["valid"], 1 - subset["valid"], subset["valid"][::-1]
    np.savez(tmp_path / "binarized_mnist.npz", valid=a)
    np.save(tmp_path / "binarized_mnist_valid.npy", b)
    (tmp_path / "binarized_mnist_valid.amat").write_bytes(amat_text(c))
    for expected, name in [(a, "binarized_mnist.npz"), (b, "binarized_mnist_valid.npy"), (c, None)]:
        np.testing.assert_array_equal(datasets.load_binarized_mnist("valid", tmp_path), expected)
        if name:
            (tmp_path / name).unlink()


def test_dataset_yields_the_rows_as_float32(mnist_subset_path, subset):
    ds = datasets.binarized_mnist("valid", mnist_subset_path)
    assert ds.element_spec == tf.TensorSpec([784], tf.float32)
    got = np.stack(list(ds.as_numpy_iterator()))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, subset["valid"].astype(np.float32))
    batch = next(iter(ds.batch(32)))
    np.testing.assert_array_equal(batch.numpy(), subset["valid"][:32].astype(np.float32))


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("load", [datasets.load_binarized_mnist, datasets.binarized_mnist])
@pytest.mark.parametrize("split", ["training", "validation", "Train", None])
def test_bad_split_names_the_valid_ones(load, split, mnist_subset_path):
    with pytest.raises(ValueError, match=r"split=.*'train', 'valid', 'test'") as info:
        load(split, mnist_subset_path)
    assert repr(split) in str(info.value)


def test_missing_without_download_says_where_it_looked_and_how_to_obtain_it(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_binarized_mnist("valid", download=False, cache_dir=tmp_path / "cache")
    message = str(info.value)
    for part in [
        "binarized_mnist.npz",
        "binarized_mnist_valid.amat",
        str(tmp_path / "env"),
        str(tmp_path / "cache"),
        "download=False",
        datasets.ORIGIN + "binarized_mnist_valid.amat",
        "path=",
        "TFNF_DATA_DIR",
    ]:
        assert part in message, part
    assert not (tmp_path / "cache").exists()


def test_missing_path_and_empty_directory_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="path=.*nope.npz.*no such file"):
        datasets.load_binarized_mnist("train", tmp_path / "nope.npz")
    with pytest.raises(
        FileNotFoundError,
        match=r"path=.*is a directory holding none of binarized_mnist.npz, "
        r"binarized_mnist_test.npy, binarized_mnist_test.amat",
    ):
        datasets.load_binarized_mnist("test", tmp_path)


@pytest.mark.parametrize(
    "array, problem",
    [
        (np.zeros((10, 783), np.uint8), r"\[N, 784\].*\(10, 783\)"),
        (np.zeros((784,), np.uint8), r"\[N, 784\].*\(784,\)"),
        (np.zeros((0, 784), np.uint8), r"N >= 1.*\(0, 784\)"),
        (np.full((3, 784), 0.5), r"values must be 0 or 1; found \[0.5\] in 3 rows"),
        (np.eye(3, 784, dtype=np.int64) * 2, r"values must be 0 or 1; found \[2\] in 3 rows"),
        (np.array([["0"] * 784]), "expected 0/1 numbers"),
    ],
    ids=["783-columns", "1-d", "no-rows", "halves", "twos", "strings"],
)
def test_bad_arrays_name_the_file(tmp_path, array, problem):
    path = tmp_path / "bad.npz"
    np.savez(path, train=array)
    with pytest.raises(ValueError, match=f"bad.npz.*'train'.*{problem}"):
        datasets.load_binarized_mnist("train", path)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("0 1 " * 391 + "1\n", r"\(1, 783\)"),
        ("0 " * 783 + "2\n", r"found \[2\]"),
        ("0 " * 783 + "0.5\n", "not a binarised MNIST .amat file.*0.5"),
        ("0 " * 784 + "\n" + "0 " * 783 + "\n", "not a binarised MNIST .amat file.*columns"),
        ("", r"N >= 1"),
    ],
    ids=["783-columns", "a-two", "a-half", "ragged", "empty"],
)
def test_bad_amat_names_the_file(tmp_path, text, problem):
    path = tmp_path / "binarized_mnist_train.amat"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"binarized_mnist_train.amat.*{problem}"):
        datasets.load_binarized_mnist("train", path)


def test_npz_without_the_split_and_unknown_suffix_and_wrong_split_file(tmp_path, subset):
    path = tmp_path / "only_train.npz"
    np.savez(path, train=subset["train"])
    with pytest.raises(
        ValueError, match=r"only_train.npz has no array 'test'; it holds \['train'\]"
    ):
        datasets.load_binarized_mnist("test", path)
    csv = tmp_path / "digits.csv"
    csv.write_text("0,1\n")
    with pytest.raises(
        ValueError, match=r"path=.*digits.csv.*suffix '.csv'.*\.npz, \.npy or \.amat"
    ):
        datasets.load_binarized_mnist("train", csv)
    amat = tmp_path / "binarized_mnist_valid.amat"
    amat.write_bytes(amat_text(subset["valid"][:2]))
    with pytest.raises(ValueError, match="holds the 'valid' split but split='test'"):
        datasets.load_binarized_mnist("test", amat)


# --- downloads ---------------------------------------------------------------------------------


def test_download_once_then_read_from_the_cache(server, subset, monkeypatch, tmp_path):
    root, requests = server
    serve(root, monkeypatch, "valid", subset["valid"])
    cache = tmp_path / "does" / "not" / "exist" / "yet"

    x = datasets.load_binarized_mnist("valid", cache_dir=cache)
    np.testing.assert_array_equal(x, subset["valid"])
    assert requests == ["/binarized_mnist_valid.amat"]
    # Parsed once and kept as .npy; the 2-bytes-a-pixel text is not kept.
    assert sorted(p.name for p in cache.iterdir()) == ["binarized_mnist_valid.npy"]
    np.testing.assert_array_equal(np.load(cache / "binarized_mnist_valid.npy"), subset["valid"])

    np.testing.assert_array_equal(
        datasets.load_binarized_mnist("valid", cache_dir=cache), subset["valid"]
    )
    np.testing.assert_array_equal(
        datasets.load_binarized_mnist("valid", cache_dir=cache, download=False), subset["valid"]
    )
    got = np.stack(list(datasets.binarized_mnist("valid", cache_dir=cache).as_numpy_iterator()))
    np.testing.assert_array_equal(got, subset["valid"].astype(np.float32))
    assert requests == ["/binarized_mnist_valid.amat"]


def test_default_cache_is_under_keras_home(server, subset, monkeypatch, tmp_path):
    root, requests = server
    serve(root, monkeypatch, "test", subset["test"])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    np.testing.assert_array_equal(datasets.load_binarized_mnist("test"), subset["test"])
    cached = tmp_path / "kh" / "datasets" / "binarized_mnist" / "binarized_mnist_test.npy"
    np.testing.assert_array_equal(np.load(cached), subset["test"])
    np.testing.assert_array_equal(datasets.load_binarized_mnist("test"), subset["test"])
    assert requests == ["/binarized_mnist_test.amat"]


def test_hash_mismatch_is_an_error_and_leaves_nothing_in_the_cache(
    server, subset, monkeypatch, tmp_path
):
    root, requests = server
    real = serve(root, monkeypatch, "valid", subset["valid"])
    monkeypatch.setitem(datasets.SHA256, "valid", "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError) as info:
        datasets.load_binarized_mnist("valid", cache_dir=cache)
    message = str(info.value)
    assert f"SHA-256 {real}, expected SHA256['valid'] = {'0' * 64}" in message
    assert datasets.ORIGIN + "binarized_mnist_valid.amat" in message and "removed" in message
    assert list(cache.iterdir()) == []
    # With the right hash the next call downloads again and succeeds.
    monkeypatch.setitem(datasets.SHA256, "valid", real)
    np.testing.assert_array_equal(
        datasets.load_binarized_mnist("valid", cache_dir=cache), subset["valid"]
    )
    assert requests == ["/binarized_mnist_valid.amat"] * 2


def test_unreachable_server_with_nothing_cached_says_how_to_obtain_it(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_binarized_mnist("train", cache_dir=cache)
    message = str(info.value)
    url = datasets.ORIGIN + "binarized_mnist_train.amat"
    for part in [
        f"the download of {url} failed",
        "refused",
        str(cache),
        "TFNF_DATA_DIR",
        "path=",
        "binarized_mnist_train.amat",
    ]:
        assert part in message, part
    assert list(cache.iterdir()) == []


def test_missing_and_truncated_downloads_leave_nothing(server, monkeypatch, tmp_path):
    root, requests = server
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="binarized_mnist_test.amat failed.*404"):
        datasets.load_binarized_mnist("test", cache_dir=cache)
    monkeypatch.setattr(datasets, "_amat_name", lambda split: f"{split}_truncated.amat")
    with pytest.raises(FileNotFoundError, match="test_truncated.amat failed.*retrieval incomplete"):
        datasets.load_binarized_mnist("test", cache_dir=cache)
    assert requests == ["/binarized_mnist_test.amat", "/test_truncated.amat"]
    assert list(cache.iterdir()) == []


def test_data_dir_env_naming_the_file_itself_is_read(monkeypatch, subset, tmp_path):
    file = tmp_path / "elsewhere.npz"
    np.savez(file, test=1 - subset["test"])  # not the array of any other place
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(file))
    loaded = datasets.load_binarized_mnist("test", cache_dir=tmp_path / "empty", download=False)
    np.testing.assert_array_equal(loaded, 1 - subset["test"])


@pytest.mark.parametrize("suffix", [".npz", ".npy"])
def test_truncated_or_corrupt_files_are_named(subset, tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    if suffix == ".npz":
        np.savez(whole, test=subset["test"])
    else:
        np.save(whole, subset["test"])
    for name, data in (
        ("truncated", whole.read_bytes()[: whole.stat().st_size // 2]),
        ("corrupt", b"not an array at all" * 10),
    ):
        bad = tmp_path / f"{name}{suffix}"
        bad.write_bytes(data)
        with pytest.raises(ValueError, match=f"{bad} cannot be read, it is truncated or corrupt"):
            datasets.load_binarized_mnist("test", bad)
