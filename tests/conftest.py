"""Fixtures shared by the test modules: the binarised MNIST files."""

import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"
# The project's shared data folder sits beside the checkout: <root>/../shared/data.
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "binarized_mnist.npz"


@pytest.fixture(scope="session")
def mnist_subset_path() -> Path:
    """tests/data/binarized_mnist_small.npz: the first 1000 train, 200 valid and 200 test rows of binarised MNIST.

    Committed with the tests, so it is there on a fresh clone; arrays train/valid/test, uint8 [N, 784].
    """
    return DATA / "binarized_mnist_small.npz"


@pytest.fixture(scope="session")
def mnist_full_path() -> Path:
    """The full binarized_mnist.npz (50000/10000/10000 rows): ../shared/data or $TFNF_DATA_DIR; else skip."""
    candidates = [SHARED_MNIST]
    if os.environ.get("TFNF_DATA_DIR"):
        candidates.append(Path(os.environ["TFNF_DATA_DIR"]).expanduser() / "binarized_mnist.npz")
    for path in candidates:
        if path.is_file():
            return path
    pytest.skip(f"full binarised MNIST not found (looked for {' and '.join(map(str, candidates))}); "
                "set TFNF_DATA_DIR to a directory holding binarized_mnist.npz")
