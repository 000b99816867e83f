"""Binarised MNIST (the fixed binarisation of Larochelle & Murray): arrays and tf.data, no models.

A split is found, in order: at `path`; in the directory named by the environment variable
`TFNF_DATA_DIR`; in the cache (`cache_dir`, default `$KERAS_HOME/datasets/binarized_mnist`, i.e.
`~/.keras/datasets/binarized_mnist`), where it is downloaded once from `ORIGIN` when
`download=True`.
A downloaded `.amat` is checked against `SHA256`, parsed once and kept as
`binarized_mnist_{split}.npy`.

References:
    Larochelle & Murray, "The Neural Autoregressive Distribution Estimator", AISTATS 2011 (the
    data).
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015 (its MNIST
    experiments).
"""

import contextlib
import hashlib
import os
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

__all__ = ["load_binarized_mnist", "binarized_mnist", "SPLITS", "ORIGIN", "SHA256", "DATA_DIR_ENV"]

#: The splits of binarised MNIST: 50,000 / 10,000 / 10,000 images.
SPLITS = ("train", "valid", "test")
NUM_PIXELS = 784
#: The environment variable naming a directory that holds the data.
DATA_DIR_ENV = "TFNF_DATA_DIR"
#: Where the .amat files are downloaded from (Larochelle & Murray's copy).
ORIGIN = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
# SHA-256 of binarized_mnist_{split}.amat as recorded by TensorFlow Datasets in
# github.com/tensorflow/datasets, tensorflow_datasets/url_checksums/binarized_mnist.txt
# (sizes 78,400,000 / 15,680,000 / 15,680,000 bytes). The three arrays of the project's
# binarized_mnist.npz, written back as .amat text, hash to exactly these values.
#: SHA-256 of each split's .amat file, checked after download.
SHA256 = {
    "train": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "valid": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "test": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}
_NPZ_NAME = "binarized_mnist.npz"


def load_binarized_mnist(
    split: str = "train",
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """One split of binarised MNIST: x [N, 784] of uint8 in {0, 1} (N = 50000, 10000, 10000).

    Arguments:
        split: "train", "valid" or "test".
        path: a `.npz` with arrays train/valid/test, a `.amat` or `.npy` holding this split, or a
            directory holding `binarized_mnist.npz` or `binarized_mnist_{split}.{npy,amat}`.
            When given, nothing else is searched.
        download: fetch `ORIGIN + binarized_mnist_{split}.amat` into the cache when it is found
            nowhere.
        cache_dir: the cache directory; default `$KERAS_HOME/datasets/binarized_mnist`
            (`~/.keras/...`).
    """
    _check_split(split)
    if path is not None:
        return _read(_resolve_path(Path(path).expanduser(), split), split)
    searched = []
    env = os.environ.get(DATA_DIR_ENV)
    if env and Path(env).expanduser().is_file():  # the file itself, e.g. .../binarized_mnist.npz
        return _read(_resolve_path(Path(env).expanduser(), split), split)
    if env:
        env_dir = Path(env).expanduser()
        found = _find_in_dir(env_dir, split)
        if found is not None:
            return _read(found, split)
        searched.append(
            f"{DATA_DIR_ENV}={env}" + ("" if env_dir.is_dir() else " (no such directory)")
        )
    else:
        searched.append(f"{DATA_DIR_ENV} (not set)")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    found = _find_in_dir(cache, split)
    if found is not None:
        return _read(found, split)
    searched.append(f"the cache {cache}")
    if not download:
        raise FileNotFoundError(_not_found(split, searched, "download=False"))
    return _download(split, cache, searched)


def binarized_mnist(
    split: str = "train",
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> tf.data.Dataset:
    """The split as a tf.data.Dataset of float32 x [784] in {0, 1}, in file order, unbatched.

    Arguments are those of `load_binarized_mnist`; shuffle and batch the result yourself.
    """
    x = load_binarized_mnist(split, path, download=download, cache_dir=cache_dir)
    # Sliced from float32 (157 MB for train): a per-element map(tf.cast) from uint8 would save
    # memory but makes an epoch 17x slower (1.3 s against 0.08 s at batch 100).
    return tf.data.Dataset.from_tensor_slices(x.astype(np.float32))


def _check_split(split) -> None:
    if split not in SPLITS:
        raise ValueError(
            f"split={split!r} is not a binarised MNIST split; use one of "
            f"{', '.join(map(repr, SPLITS))}"
        )


def _amat_name(split: str) -> str:
    return f"binarized_mnist_{split}.amat"


def _url(split: str) -> str:
    return ORIGIN.rstrip("/") + "/" + _amat_name(split)


def _default_cache_dir() -> Path:
    # Read at call time (keras reads KERAS_HOME once, at import).
    return (
        Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser()
        / "datasets"
        / "binarized_mnist"
    )


def _candidates(split: str) -> list[str]:
    return [_NPZ_NAME, f"binarized_mnist_{split}.npy", _amat_name(split)]


def _find_in_dir(directory: Path, split: str) -> Path | None:
    for name in _candidates(split):
        if (directory / name).is_file():
            return directory / name
    return None


def _resolve_path(path: Path, split: str) -> Path:
    """The file that `path=` names for this split; errors say what was wrong with `path`."""
    if path.is_dir():
        found = _find_in_dir(path, split)
        if found is None:
            raise FileNotFoundError(
                f"path={str(path)!r} is a directory holding none of "
                f"{', '.join(_candidates(split))}; "
                f"download {_url(split)} into it, or pass path= the file itself"
            )
        return found
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r}: no such file or directory")
    for other in SPLITS:
        if other != split and path.name in (_amat_name(other), f"binarized_mnist_{other}.npy"):
            raise ValueError(
                f"path={str(path)!r} holds the {other!r} split but split={split!r} was asked for"
            )
    return path


def _read(file: Path, split: str) -> np.ndarray:
    """x [N, 784] uint8 from a .npz (array `split`), .npy or .amat file, checked."""
    suffix = file.suffix.lower()
    if suffix == ".npz":
        with _unreadable(file):
            archive = np.load(file)
        with archive:
            if split not in archive.files:
                raise ValueError(
                    f"{file} has no array {split!r}; it holds {archive.files}, expected "
                    f"{list(SPLITS)}"
                )
            with _unreadable(file):
                x = archive[split]
            return _checked(x, f"{file}[{split!r}]")
    if suffix == ".npy":
        with _unreadable(file):
            x = np.load(file)
        return _checked(x, str(file))
    if suffix == ".amat":
        return _checked(_parse_amat(file), str(file))
    raise ValueError(
        f"path={str(file)!r} has suffix {file.suffix!r}; expected a .npz, .npy or .amat file or a "
        "directory"
    )


@contextlib.contextmanager
def _unreadable(file: Path):
    """Name the file when numpy cannot read it (truncated or corrupt), instead of a bare error."""
    try:
        yield
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{file} cannot be read, it is truncated or corrupt ({type(error).__name__}: "
            f"{error}); delete it and download it again"
        ) from error


def _parse_amat(file: Path) -> np.ndarray:
    """x [N, 784] from text with one image per line, 784 whitespace-separated 0/1 integers."""
    data = file.read_bytes()
    # The published files are exactly "d d ... d\n": read as little-endian 2-byte words, each is
    # digit + 256 * separator, so one comparison checks the layout; 0.05 s for train against
    # 0.5 s for np.loadtxt, which reads any other whitespace layout.
    if data and len(data) % (2 * NUM_PIXELS) == 0:
        words = np.frombuffer(data, "<u2").reshape(-1, NUM_PIXELS)
        spaced = ((words[:, :-1] | 1) == ord("1") + 256 * ord(" ")).all()
        ended = ((words[:, -1] | 1) == ord("1") + 256 * ord("\n")).all()
        if spaced and ended:
            return (words & 1).astype(np.uint8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty file warns; the shape check below names it
            return np.loadtxt(file, dtype=np.uint8, ndmin=2, comments=None)
    except ValueError as e:
        raise ValueError(
            f"{file} is not a binarised MNIST .amat file (one image a line, 784 values 0/1): {e}"
        ) from e


def _checked(x: np.ndarray, source: str) -> np.ndarray:
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != NUM_PIXELS:
        raise ValueError(
            f"{source}: expected images as an array [N, {NUM_PIXELS}] with N >= 1, got shape "
            f"{x.shape}"
        )
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{source}: expected 0/1 numbers, got dtype {x.dtype}")
    if (
        x.dtype.kind == "f" or x.min() < 0 or x.max() > 1
    ):  # min/max: 30x faster than the mask for integers
        bad = (x != 0) & (x != 1)
        if bad.any():
            raise ValueError(
                f"{source}: values must be 0 or 1; found {np.unique(x[bad])[:5].tolist()} "
                f"in {int(bad.any(axis=1).sum())} rows"
            )
    return x.astype(np.uint8, copy=False)


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(split: str, cache: Path, searched: list[str]) -> np.ndarray:
    """Fetch the split's .amat into `cache`, verify it, keep it as .npy; x [N, 784] uint8."""
    name, url = _amat_name(split), _url(split)
    cache = cache.resolve()
    # An absolute cache_subdir is used as is; keras would otherwise move an unwritable or
    # not-yet-existing cache_dir to /tmp/.keras without a word. The hash is checked here, not by
    # get_file(file_hash=...), because keras raises on a mismatch but leaves the bad file in the
    # cache.
    try:
        amat = Path(keras.utils.get_file(name, origin=url, cache_subdir=str(cache)))
    except (
        Exception
    ) as e:  # keras re-raises urllib's errors as bare Exception; it removes the partial file
        raise FileNotFoundError(
            _not_found(split, searched, f"the download of {url} failed ({e})")
        ) from e
    actual = _sha256(amat)
    if actual != SHA256[split]:
        amat.unlink()
        raise ValueError(
            f"the download of {url} has SHA-256 {actual}, expected SHA256[{split!r}] = "
            f"{SHA256[split]}; "
            f"the file was removed from {cache}. Try again, or obtain the file another way and "
            f"pass path= or set {DATA_DIR_ENV}"
        )
    x = _checked(_parse_amat(amat), str(amat))
    npy = cache / f"binarized_mnist_{split}.npy"
    partial = cache / f".{npy.name}.partial"
    with open(partial, "wb") as f:
        np.save(f, x)
    os.replace(partial, npy)  # atomic: a reader sees the whole .npy or none
    amat.unlink()
    return x


def _not_found(split: str, searched: list[str], why: str) -> str:
    url = _url(split)
    return (
        f"binarised MNIST split {split!r} not found: looked for {', '.join(_candidates(split))} in "
        f"{' and '.join(searched)}, and {why}. To obtain it: call with download=True (fetches "
        f"{url} once "
        f"into the cache), or download {url} yourself and pass path= that file or its directory, "
        "or put it "
        f"in a directory named by the environment variable {DATA_DIR_ENV}"
    )
