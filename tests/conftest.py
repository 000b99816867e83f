"""What the test modules share: data fixtures, the bijector registry and independent recomputations.

Test modules import the plain functions and tables from here (`from conftest import ...`);
the fixtures pytest hands out by name.
"""

import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

# The suite compiles XLA's programs without LLVM's optimisation passes: the same HLO programs,
# the same arithmetic, in about half the compile time that dominates most tests (a `tfnf vae`
# test: 9.4 s against 17.1 s). Set here, before TensorFlow first compiles, and inherited by the
# subprocesses (strategies, notebooks, the XLA cache). Benchmarks keep XLA's default; set
# `XLA_FLAGS=--xla_backend_optimization_level=3` to run the suite that way.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    )

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfnf import bijectors, layers, names

tfb, tfd = tfp.bijectors, tfp.distributions

DATA = Path(__file__).resolve().parent / "data"
# The project's shared data folder sits beside the checkout: <root>/../shared/data.
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "binarized_mnist.npz"

# Flows by name, from the registry itself, so that a new family is tested by default: those with
# an exact density of z (the Hamiltonian flow's is on (z, rho); tests/test_hamiltonian.py).
FLOWS = sorted(name for name in layers.FLOWS if name not in names.TARGET_INFORMED_FLOWS)
# The flows made of K maps of one bijector family (a `Stack`), with weights per map.
MAP_FLOWS = sorted(name for name, cls in layers.FLOWS.items() if hasattr(cls, "bijector_class"))


@pytest.fixture(scope="session")
def mnist_subset_path() -> Path:
    """tests/data/binarized_mnist_small.npz: the first 1000 train, 200 valid and 200 test rows of
    binarised MNIST.

    Committed with the tests, so it is there on a fresh clone; arrays train/valid/test,
    uint8 [N, 784].
    """
    return DATA / "binarized_mnist_small.npz"


@pytest.fixture(scope="session")
def mnist_full_path() -> Path:
    """The full binarized_mnist.npz (50000/10000/10000 rows): ../shared/data or $TFNF_DATA_DIR;
    else skip.
    """
    candidates = [SHARED_MNIST]
    if os.environ.get("TFNF_DATA_DIR"):
        candidates.append(Path(os.environ["TFNF_DATA_DIR"]).expanduser() / "binarized_mnist.npz")
    for path in candidates:
        if path.is_file():
            return path
    pytest.skip(
        f"full binarised MNIST not found (looked for {' and '.join(map(str, candidates))}); "
        "set TFNF_DATA_DIR to a directory holding binarized_mnist.npz"
    )


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """The documentation site, built once per test process as README says, warnings as errors
    and the notebooks executed (docs/conf.py gives them the small parameters of
    notebooks/small_parameters.json): the html folder, with myst-nb's executed notebooks in
    ../jupyter_execute/tutorials/.

    Its users (tests/test_docs.py, tests/test_notebooks.py) share one xdist group, so one
    worker builds it, once.
    """
    out = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-j", "auto"]
    command += ["-b", "html", "-d", str(out / "doctrees"), str(ROOT / "docs"), str(out / "html")]
    env = {**os.environ, "TFNF_DOCS_EXECUTE": "force", "TF_CPP_MIN_LOG_LEVEL": "3"}
    built = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    said = built.stdout[-4000:] + built.stderr[-6000:]
    assert built.returncode == 0, f"the site did not build:\n{said}"
    return out / "html"


# -- the bijector registry: every bijector passes the same battery (test_bijectors.py) --------

D = 3  # event size of the battery
STACK_LENGTH = 4  # K of the Stack cases


def planar_parameters(rng, shape, dtype, scale):
    return {
        "u": scale * rng.normal(size=(*shape, D)),
        "w": rng.normal(size=(*shape, D)),
        "b": rng.normal(size=shape),
    }


def radial_parameters(rng, shape, dtype, scale):
    return {
        "z0": rng.normal(size=(*shape, D)),
        "a": scale * rng.normal(size=shape),
        "b": scale * rng.normal(size=shape),
    }


SYLVESTER_RANK = 2  # M of the battery's Sylvester maps (D = 3)


def sylvester_parameters(rng, shape, dtype, scale):
    # Q from numpy's QR of a random [D, M]: orthonormal columns, computed apart from tfnf's.
    raw = rng.normal(size=(*shape, D, SYLVESTER_RANK))
    return {
        "q": np.linalg.qr(raw)[0],
        "r": scale * rng.normal(size=(*shape, SYLVESTER_RANK, SYLVESTER_RANK)),
        "r_tilde": rng.normal(size=(*shape, SYLVESTER_RANK, SYLVESTER_RANK)),
        "b": rng.normal(size=(*shape, SYLVESTER_RANK)),
    }


class Case(NamedTuple):
    """A bijector of the battery: random raw parameters, and the constructor that takes them."""

    parameters: Callable  # (rng, dtype, scale) -> {name: array}
    build: Callable  # (**parameters) -> bijector


def case(family: str, batch: tuple = (), stacked: bool = False) -> Case:
    bijector_class, draw = {
        "planar": (bijectors.PlanarFlow, planar_parameters),
        "radial": (bijectors.RadialFlow, radial_parameters),
        "sylvester": (bijectors.Sylvester, sylvester_parameters),
    }[family]
    shape = ((STACK_LENGTH,) if stacked else ()) + batch

    def parameters(rng, dtype=np.float64, scale=1.0):
        return {name: value.astype(dtype) for name, value in draw(rng, shape, dtype, scale).items()}

    def build(**params):
        bijector = bijector_class(**params)
        return bijectors.Stack(bijector) if stacked else bijector

    return Case(parameters, build)


BIJECTORS = {
    f"{'stack of ' if stacked else ''}{family}{'[3]' if batch else ''}": case(
        family, batch, stacked
    )
    for family in ("planar", "radial", "sylvester")
    for stacked in (False, True)
    for batch in ((), (3,))
}
BATCHED = sorted(name for name in BIJECTORS if name.endswith("[3]"))


def make_bijector(name: str, rng, dtype=np.float64, scale=1.0):
    """A bijector of the registry with fresh random raw parameters."""
    entry = BIJECTORS[name]
    return entry.build(**entry.parameters(rng, dtype, scale))


def points(rng, bijector, n=200, dtype=np.float64, spread=2.0):
    """n points of the bijector's event space for each batch member: [n, *batch, D]."""
    batch = tuple(bijector.experimental_batch_shape())
    return (spread * rng.normal(size=(n, *batch, D))).astype(dtype)


def autodiff_jacobian(f, z) -> np.ndarray:
    """df/dz of each event from autodiff, z: [N, *batch, D] -> [N, *batch, D, D]."""
    z = np.asarray(z)
    flat = tf.constant(z.reshape(-1, z.shape[-1]))
    with tf.GradientTape() as tape:
        tape.watch(flat)
        y = tf.reshape(
            f(tf.reshape(flat, z.shape)), flat.shape
        )  # each event depends on itself only
    return tape.batch_jacobian(y, flat).numpy().reshape(z.shape + z.shape[-1:])


def autodiff_log_det(f, z) -> np.ndarray:
    """log|det df/dz| from the autodiff Jacobian of each event, z: [N, *batch, D] -> [N, *batch]."""
    return np.linalg.slogdet(autodiff_jacobian(f, z))[1]


def fresh(x):
    """A new tensor with x's values, so TFP's bijector cache cannot answer for the computation."""
    return tf.constant(np.array(x))


@pytest.fixture
def rng():
    return np.random.default_rng(20150505)


def weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


# -- independent numpy recomputations of the models ----------------------------------------


def softplus(x):
    return np.logaddexp(0.0, x)


def dense(x, layer):
    return x @ layer.kernel.numpy() + layer.bias.numpy()


def maxout(x, layer):
    y = dense(x, layer.dense)
    return y.reshape(*y.shape[:-1], layer.units, layer.pieces).max(
        axis=-1
    )  # windows of consecutive units


def head_parameters(layer, h):
    """AmortizedFlow's parameters from its head weights, in numpy: {name: [B, D] or [K, B, ...]}."""
    scale = {"softplus": softplus, "exp": np.exp}[layer.scale]
    params = {"loc": dense(h, layer.loc_head), "scale": scale(dense(h, layer.scale_head))}
    K, D = layer.num_layers, layer.event_size
    if layer.flow_features is not None:  # the flow heads read h through the shared bottleneck
        h = dense(h, layer.flow_features)
    if layer.flow == "sylvester":
        return {**params, **sylvester_head_parameters(layer, h)} if K else params
    for name, rank in layer.parameter_ranks.items() if K else []:
        out = dense(h, layer.flow_heads[name]).reshape((len(h), K) + (D,) * rank)
        params[name] = np.moveaxis(out, 1, 0)
    if layer.flow == "planar" and K:  # u starts from the u whose u_hat is 0: ln(e - 1) w / ||w||^2
        w = params["w"]
        params["u"] = params["u"] + math.log(math.e - 1) * w / np.sum(w**2, axis=-1, keepdims=True)
    if layer.flow == "radial" and K:  # raw beta starts from raw alpha
        params["b"] = params["a"] + params["b"]
    return params


def sylvester_head_parameters(layer, h):
    """AmortizedFlow's Sylvester parameters in numpy: q [K, B, D, M] from its variant, r, r_tilde
    [K, B, M, M], b [K, B, M]."""
    K, D = layer.num_layers, layer.event_size
    raw = {
        name: np.moveaxis(dense(h, head).reshape((len(h), K, *layer.head_shapes[name])), 1, 0)
        for name, head in layer.flow_heads.items()
    }
    columns = raw["b"].shape[-1]
    if layer.variant == "orthogonal":
        q = np.linalg.qr(raw["q_raw"])[0]
    elif layer.variant == "householder":
        q = np.broadcast_to(np.eye(D), (K, len(h), D, D)).copy()
        for j in range(raw["q_raw"].shape[-2]):
            v = raw["q_raw"][..., j, :]
            v = v / np.linalg.norm(v, axis=-1, keepdims=True)
            q = q - 2 * np.einsum("...d,...e->...de", np.einsum("...de,...e->...d", q, v), v)
        q = q[..., :columns]
    else:
        q = np.stack(
            [
                np.broadcast_to(np.eye(D)[:: 1 if k % 2 == 0 else -1], (len(h), D, D))
                for k in range(K)
            ]
        )
    return {"q": q, "r": raw["r"], "r_tilde": raw["r_tilde"], "b": raw["b"]}


def per_example_posterior(layer, params, i):
    """q_K(z | x_i) as a tfb.Chain of the K maps' slices [k, i], f_0 first."""
    maps = [
        layer.families[layer.flow][0](*[params[n][k, i] for n in layer.parameter_ranks])
        for k in range(layer.num_layers)
    ]
    base = tfd.MultivariateNormalDiag(params["loc"][i], params["scale"][i])
    return tfd.TransformedDistribution(base, tfb.Chain(list(reversed(maps))))


def gaussian_log_prob(z, loc, scale):
    return np.sum(
        -0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi), axis=-1
    )


def decoder_logits(model, z):
    h = z
    for layer in model.decoder.layers[:-1]:
        h = maxout(h, layer)
    return dense(h, model.decoder.layers[-1])


def bernoulli_log_prob(x, logits):
    return np.sum(-x * softplus(-logits) - (1 - x) * softplus(logits), axis=-1)
