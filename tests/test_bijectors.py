"""One battery for every bijector: log-det against autodiff, round trips, constraints, batching.

The registry (`conftest.BIJECTORS`) holds planar and radial maps, a `Stack` of
each, and batched versions of all four; every test over it runs on each. The
bijective-and-finite check follows TFP's
`tensorflow_probability/python/bijectors/bijector_test_util.py::assert_bijective_and_finite`,
which the wheel does not ship.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import (
    BATCHED,
    BIJECTORS,
    D,
    autodiff_jacobian,
    autodiff_log_det,
    case,
    fresh,
    make_bijector,
    points,
)

from tfnf import bijectors
from tfnf.bijectors.planar import constrain_u

NAMES = sorted(BIJECTORS)


FAMILIES = ("planar", "radial", "sylvester")


def elementary(family, rng, batch=()):
    """A planar or radial bijector (not a Stack) with parameters of batch shape `batch`."""
    entry = case(family, batch)
    return entry.build(**entry.parameters(rng))


def planar(rng, batch=()):
    return elementary("planar", rng, batch)


# Raw parameters at the edges of the invertibility constraints.
ADVERSARIAL = {
    "planar u=-100w": lambda: bijectors.PlanarFlow(
        u=-100.0 * np.array([0.6, -0.3, 0.2]), w=np.array([0.6, -0.3, 0.2]), b=0.4
    ),
    "planar u=+100w": lambda: bijectors.PlanarFlow(
        u=100.0 * np.array([0.6, -0.3, 0.2]), w=np.array([0.6, -0.3, 0.2]), b=-0.4
    ),
    "planar w=0": lambda: bijectors.PlanarFlow(u=np.array([1.0, 2.0, -1.0]), w=np.zeros(3), b=0.7),
    "planar large w": lambda: bijectors.PlanarFlow(
        u=np.array([0.5, -2.0, 1.0]), w=np.array([30.0, -20.0, 5.0]), b=1.0
    ),
    "sylvester R~_mm = 0": lambda: bijectors.Sylvester(
        q=np.linalg.qr(np.array([[1.0, 0.2], [0.3, -1.0], [0.5, 0.4]]))[0],
        r=np.array([[0.8, 1.5], [0.0, -1.2]]),
        r_tilde=np.array([[0.0, 0.7], [0.0, 0.0]]),
        b=np.array([0.3, -0.2]),
    ),
    "sylvester R_mm R~_mm -> -1": lambda: bijectors.Sylvester(
        q=np.linalg.qr(np.array([[1.0, 0.2], [0.3, -1.0], [0.5, 0.4]]))[0],
        r=np.array([[6.0, 1.5], [0.0, -6.0]]),
        r_tilde=np.array([[-6.0, 0.7], [0.0, 6.0]]),
        b=np.array([0.3, -0.2]),
    ),
    "radial beta->-alpha": lambda: bijectors.RadialFlow(
        z0=np.array([0.1, -0.2, 0.3]), a=2.0, b=-30.0
    ),
    "radial alpha->0": lambda: bijectors.RadialFlow(z0=np.array([0.1, -0.2, 0.3]), a=-5.0, b=3.0),
    "radial large beta": lambda: bijectors.RadialFlow(z0=np.array([0.1, -0.2, 0.3]), a=0.5, b=50.0),
}


@pytest.mark.parametrize("name", NAMES)
def test_log_det_matches_autodiff_jacobian(name, rng):
    for _ in range(5):
        bij = make_bijector(name, rng)
        z = points(rng, bij)
        np.testing.assert_allclose(
            bij.forward_log_det_jacobian(z, event_ndims=1).numpy(),
            autodiff_log_det(bij.forward, z),
            rtol=0,
            atol=1e-8,
        )


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_log_det_matches_autodiff_jacobian_at_adversarial_parameters(name, rng):
    bij = ADVERSARIAL[name]()
    z = points(rng, bij)
    np.testing.assert_allclose(
        bij.forward_log_det_jacobian(z, event_ndims=1).numpy(),
        autodiff_log_det(bij.forward, z),
        rtol=0,
        atol=1e-8,
    )


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-10)])
@pytest.mark.parametrize("name", NAMES)
def test_inverse_round_trip_up_to_1e3_as_accurate_as_the_conditioning_allows(name, dtype, tol, rng):
    # An exact inverse's forward error is at most its backward error times the condition
    # number of df/dz (a chain of maps can be ill conditioned where no one map is), so the
    # tolerance at each point scales with cond(df/dz) there, from the float64 autodiff Jacobian.
    entry = BIJECTORS[name]
    for _ in range(3):  # three draws of parameters, 2,000 points each over six decades
        params = entry.parameters(rng)
        bij = entry.build(**{k: v.astype(dtype) for k, v in params.items()})
        z = points(rng, bij, n=2000, spread=1.0)
        z = z * np.logspace(-3, 3, 2000).reshape((-1,) + (1,) * (z.ndim - 1))
        condition = np.linalg.cond(autodiff_jacobian(entry.build(**params).forward, z))
        z = z.astype(dtype)
        z_back = bij.inverse(fresh(bij.forward(z))).numpy()
        error = np.abs(z_back - z).max(axis=-1) / np.maximum(1.0, np.abs(z).max(axis=-1))
        assert np.all(error <= tol * np.maximum(1.0, condition))


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_inverse_is_backward_stable_at_adversarial_parameters(name, rng):
    # Near w.u_hat = -1 the map is nearly singular, so the forward error of any
    # inverse is amplified by its conditioning; what an exact solver owes is a
    # point that maps back onto y to round-off.
    bij = ADVERSARIAL[name]()
    y = rng.normal(size=(2000, D)) * np.logspace(-3, 3, 2000)[:, None]
    residual = np.abs(bij.forward(fresh(bij.inverse(y))).numpy() - y)
    assert (residual / np.maximum(1.0, np.abs(y).max(axis=-1, keepdims=True))).max() <= 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_inverse_log_det_matches_autodiff_jacobian_of_inverse(name, rng):
    bij = make_bijector(name, rng)
    y = points(rng, bij)
    ildj = bij.inverse_log_det_jacobian(y, event_ndims=1).numpy()
    np.testing.assert_allclose(ildj, autodiff_log_det(bij.inverse, y), rtol=0, atol=1e-8)
    fldj_at_inverse = bij.forward_log_det_jacobian(
        fresh(bij.inverse(fresh(y))), event_ndims=1
    ).numpy()
    np.testing.assert_allclose(ildj, -fldj_at_inverse, rtol=0, atol=1e-12)


# Up to 300 in size: softplus(-745) is 0 in float64, the end of "any real number" on a computer.
RAW = np.concatenate([-np.logspace(-3, 2.5, 12), [0.0], np.logspace(-3, 2.5, 12)])


def test_planar_constraint_holds_for_any_raw_parameters():
    u1, w1, u2, w2 = np.meshgrid(RAW, RAW, RAW[::3], RAW[::3], indexing="ij")
    u = np.stack([u1.ravel(), u2.ravel()], -1)
    w = np.stack([w1.ravel(), w2.ravel()], -1)
    wu = np.sum(w * u, -1)
    keep = wu > -30  # beyond, 1 + m(w.u) = softplus(w.u) is below float64 resolution of 1
    u_hat = constrain_u(tf.constant(u), tf.constant(w)).numpy()
    w_u_hat = np.sum(w * u_hat, -1)
    # Independent closed form: w.u_hat = m(w.u) = log(1 + e^{w.u}) - 1 where w != 0,
    # else w.u_hat = 0.
    expected = np.where(np.sum(w * w, -1) > 0, np.logaddexp(0.0, wu) - 1.0, 0.0)
    scale = 1.0 + np.abs(u).max(-1) * np.abs(w).max(-1) + np.abs(expected)
    assert np.all(np.abs(w_u_hat - expected) <= 1e-12 * scale)
    assert np.all(w_u_hat[keep] > -1.0)


def test_radial_constraint_holds_for_any_raw_parameters():
    a, b = np.meshgrid(RAW, RAW, indexing="ij")
    bij = bijectors.RadialFlow(z0=np.zeros(2), a=a.ravel(), b=b.ravel())
    alpha, beta = bij.alpha().numpy(), bij.beta().numpy()
    np.testing.assert_allclose(alpha, np.logaddexp(0.0, a.ravel()), rtol=1e-12)
    assert np.all(alpha > 0)
    assert np.all(beta >= -alpha)
    assert np.all(np.abs(beta + alpha - np.logaddexp(0.0, b.ravel())) <= 1e-14 * (1 + alpha))


@pytest.mark.parametrize("name", NAMES)
def test_bijective_and_finite_on_grid_of_points_and_parameters(name, rng):
    # After TFP's assert_bijective_and_finite: every output finite, both round
    # trips close, and fldj(x) = -ildj(f(x)), over a grid of points and a grid of raw parameters.
    grid = np.stack(np.meshgrid(*[np.linspace(-10, 10, 9)] * D, indexing="ij"), -1).reshape(-1, D)
    for scale in (0.01, 1.0, 10.0):
        bij = make_bijector(name, rng, scale=scale)
        batch = tuple(bij.experimental_batch_shape())
        x0 = np.broadcast_to(grid.reshape((-1,) + (1,) * len(batch) + (D,)), (len(grid), *batch, D))
        y = bij.forward(fresh(x0)).numpy()
        x = bij.inverse(fresh(y)).numpy()
        fldj = bij.forward_log_det_jacobian(fresh(x0), event_ndims=1).numpy()
        ildj = bij.inverse_log_det_jacobian(fresh(y), event_ndims=1).numpy()
        for value in (y, x, fldj, ildj):
            assert np.all(np.isfinite(value))
        assert np.all(np.abs(x - x0) <= 1e-8 * (1 + np.abs(x0)))
        y_back = bij.forward(fresh(bij.inverse(fresh(x0)))).numpy()
        assert np.all(np.abs(y_back - x0) <= 1e-8 * (1 + np.abs(x0)))
        np.testing.assert_allclose(fldj, -ildj, atol=1e-8)


@pytest.mark.parametrize("name", BATCHED)
def test_batched_parameters_act_like_a_loop_over_unbatched_ones(name, rng):
    bij = make_bijector(name, rng)
    (batch,) = bij.experimental_batch_shape()
    z = points(rng, bij, n=5)
    y = bij.forward(z).numpy()
    fldj = bij.forward_log_det_jacobian(z, event_ndims=1).numpy()
    assert y.shape == (5, batch, D) and fldj.shape == (5, batch)
    for i in range(batch):
        one = bij[i]  # TFP's batch slicing (through _parameter_properties; Stack keeps its K axis)
        assert one.experimental_batch_shape() == []
        np.testing.assert_allclose(y[:, i], one.forward(z[:, i]).numpy(), rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(
            fldj[:, i],
            one.forward_log_det_jacobian(z[:, i], event_ndims=1).numpy(),
            rtol=1e-14,
            atol=1e-14,
        )
    np.testing.assert_allclose(bij.inverse(fresh(y)).numpy(), z, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_receives_a_gradient(name, rng):
    entry = BIJECTORS[name]
    params = {k: tf.Variable(v, name=k) for k, v in entry.parameters(rng).items()}
    with tf.GradientTape() as tape:
        bij = entry.build(**params)
        z = points(rng, bij)
        loss = tf.reduce_sum(bij.forward(z) ** 2) + tf.reduce_sum(
            bij.forward_log_det_jacobian(z, event_ndims=1)
        )
    for k, g in zip(params, tape.gradient(loss, list(params.values())), strict=True):
        assert g is not None, k
        g = tf.convert_to_tensor(g).numpy()  # a Stack's gather gives IndexedSlices
        # Sylvester's R and R~ are read from the upper triangle of their raw matrices only.
        used = np.triu(np.ones(g.shape[-2:], bool)) if k in ("r", "r_tilde") else True
        assert np.all(np.abs(g[..., used] if used is not True else g) > 0), k
        if used is not True:
            assert np.all(g[..., ~used] == 0), k


@pytest.mark.parametrize("name", NAMES)
def test_eager_function_and_xla_agree(name, rng):
    bij = make_bijector(name, rng)
    z = tf.constant(points(rng, bij))

    def everything(z):
        y = bij.forward(z)
        return y, bij.forward_log_det_jacobian(z, event_ndims=1), bij.inverse(tf.identity(y) + 0.0)

    eager = everything(z)
    for compiled in (tf.function(everything), tf.function(everything, jit_compile=True)):
        for a, b in zip(eager, compiled(z), strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_float32_in_float32_out(name, rng):
    bij = make_bijector(name, rng, dtype=np.float32)
    z = points(rng, bij, dtype=np.float32)
    assert bij.forward(z).dtype == tf.float32
    assert bij.inverse(z).dtype == tf.float32
    np.testing.assert_allclose(
        bij.forward_log_det_jacobian(z, event_ndims=1).numpy(),
        autodiff_log_det(bij.forward, z),
        rtol=0,
        atol=1e-4,
    )


def test_old_names_are_the_new_bijectors():
    assert bijectors.Planar is bijectors.PlanarFlow and bijectors.Radial is bijectors.RadialFlow


def test_validate_args_names_the_non_finite_parameter():
    with pytest.raises(ValueError, match="`u` must be finite"):
        bijectors.PlanarFlow(u=[1.0, np.nan], w=[1.0, 2.0], b=0.0, validate_args=True)
    a = tf.Variable(0.0)
    bij = bijectors.RadialFlow(z0=[0.0, 0.0], a=a, b=0.0, validate_args=True)
    a.assign(np.inf)  # a variable is checked where it is used, in the graph
    with pytest.raises(tf.errors.InvalidArgumentError, match="`a` must be finite"):
        tf.function(bij.forward)(tf.constant([[0.0, 0.0]]))


def test_mismatched_event_sizes_are_named():
    with pytest.raises(ValueError, match="`u` and `w` must share the event size"):
        bijectors.PlanarFlow(u=[1.0, 2.0, 3.0], w=[1.0, 2.0], b=0.0)
    with pytest.raises(ValueError, match="`z0` must have shape"):
        bijectors.RadialFlow(z0=1.0, a=0.0, b=0.0)


def test_integer_parameters_are_refused():
    with pytest.raises(TypeError, match="floating point"):
        bijectors.PlanarFlow(u=np.array([1, 2]), w=np.array([1, 2]), b=np.array(0))


# -- Stack: K maps of one family as one loop -----------------------------------


def chain_of_slices(layers, num):
    """The same composition written with TFP's own Chain, f_0 applied first."""
    return tfp.bijectors.Chain([layers[k] for k in reversed(range(num))])


@pytest.mark.parametrize("name", FAMILIES)
def test_stack_equals_tfp_chain_of_its_slices(name, rng):
    num = 5
    stack = bijectors.Stack(elementary(name, rng, batch=(num,)))
    chain = chain_of_slices(stack.layers, num)
    x = points(rng, stack)
    y = chain.forward(x).numpy()
    np.testing.assert_allclose(stack.forward(fresh(x)).numpy(), y, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(
        stack.forward_log_det_jacobian(fresh(x), event_ndims=1).numpy(),
        chain.forward_log_det_jacobian(fresh(x), event_ndims=1).numpy(),
        rtol=0,
        atol=1e-12,
    )
    np.testing.assert_allclose(stack.inverse(fresh(y)).numpy(), x, rtol=0, atol=1e-9)
    np.testing.assert_allclose(
        stack.inverse_log_det_jacobian(fresh(y), event_ndims=1).numpy(),
        autodiff_log_det(stack.inverse, y),
        rtol=0,
        atol=1e-8,
    )
    np.testing.assert_allclose(
        stack.forward_log_det_jacobian(fresh(x), event_ndims=1).numpy(),
        autodiff_log_det(stack.forward, x),
        rtol=0,
        atol=1e-8,
    )


def test_stack_of_batched_layers_acts_per_batch_member(rng):
    num, batch, samples = 4, 3, 6
    stack = bijectors.Stack(planar(rng, batch=(num, batch)))  # u: [K, B, D]
    assert stack.experimental_batch_shape() == [batch]
    z = rng.normal(size=(samples, batch, D))
    y, ldj = stack.forward(z).numpy(), stack.forward_log_det_jacobian(z, event_ndims=1).numpy()
    assert y.shape == (samples, batch, D) and ldj.shape == (samples, batch)
    for i in range(batch):
        member = chain_of_slices(stack.layers[:, i], num)
        np.testing.assert_allclose(y[:, i], member.forward(z[:, i]).numpy(), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(
            ldj[:, i],
            member.forward_log_det_jacobian(z[:, i], event_ndims=1).numpy(),
            rtol=0,
            atol=1e-12,
        )


@pytest.mark.parametrize("batch", [(), (3,)])
@pytest.mark.parametrize(
    "name, unroll, matvec, columns",
    # UNROLL: planar's sweep only; matvec: planar's dot products and parameter gradients as
    # matrix-vector products (at D >= MATVEC_MIN_DIM; here at D = 3); columns: a flow's own
    # maps on a [B, D] batch run on its transpose (stack.COLUMNS), else on the rows, here over
    # two sample axes for the products. With batch (3,) the maps are a batch: rows.
    [(f, 1, False, True) for f in FAMILIES]
    + [("planar", 3, False, True), ("planar", 1, True, True)]
    + [("planar", 1, False, False), ("planar", 1, True, False)],
)
def test_stack_forward_sweep_gradients_equal_autodiff_through_a_chain(
    name, batch, unroll, matvec, columns, rng, monkeypatch
):
    # Stack's sweep has a hand-made gradient (planar: in closed form, UNROLL maps per loop
    # iteration; radial: rematerialising); TF's autodiff through TFP's Chain of the slices is
    # the reference, eagerly and under XLA.
    monkeypatch.setattr(bijectors.stack, "UNROLL", unroll)
    monkeypatch.setattr(bijectors.stack, "COLUMNS", columns)
    if matvec:
        monkeypatch.setattr(bijectors.planar, "MATVEC_MIN_DIM", 1)
    num = 4
    layers = elementary(name, rng, batch=(num, *batch))
    params = [tf.Variable(p) for p in layers.parameters.values() if isinstance(p, np.ndarray)]
    samples = (2, 7) if matvec and not columns else (7,)
    x = tf.constant(rng.normal(size=(*samples, *batch, D)))
    cot_y, cot_ldj = rng.normal(size=(*samples, *batch, D)), rng.normal(size=(*samples, *batch))

    def objective(make_sweep):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y, ldj = make_sweep(type(layers)(*params))
            value = tf.reduce_sum(y * cot_y) + tf.reduce_sum(ldj * cot_ldj)
        return [value, *tape.gradient(value, [x, *params])]

    def by_stack(f):
        return bijectors.Stack(f).forward_and_log_det(x)

    def by_chain(f):
        chain = chain_of_slices(f, num)
        return chain.forward(x), chain.forward_log_det_jacobian(x, event_ndims=1)

    expected = objective(by_chain)
    for run in (
        lambda: objective(by_stack),
        tf.function(lambda: objective(by_stack), jit_compile=True),
    ):
        for a, b in zip(run(), expected, strict=True):
            a, b = (tf.convert_to_tensor(v).numpy() for v in (a, b))  # IndexedSlices too
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("size", [1, 3])
def test_stack_inverts_per_example_maps_of_a_batch_size_unknown_when_traced(size, rng):
    # The amortised case: parameters [K, B, D] with B known only at run time.
    num, batch = 3, 5
    u, w = rng.normal(size=(2, num, batch, size))
    b = rng.normal(size=(num, batch))
    y = rng.normal(size=(batch, size))
    spec = [tf.TensorSpec([num, None, size], tf.float64)] * 2 + [
        tf.TensorSpec([num, None], tf.float64),
        tf.TensorSpec([None, size], tf.float64),
    ]

    @tf.function(input_signature=spec)
    def inverse_and_log_det(u, w, b, y):
        stack = bijectors.Stack(bijectors.PlanarFlow(u, w, b))
        return stack.inverse(y), stack.inverse_log_det_jacobian(y, event_ndims=1)

    x, ildj = (t.numpy() for t in inverse_and_log_det(u, w, b, y))
    for i in range(batch):
        member = chain_of_slices(bijectors.PlanarFlow(u[:, i], w[:, i], b[:, i]), num)
        np.testing.assert_allclose(x[i], member.inverse(y[i]).numpy(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(
            ildj[i],
            member.inverse_log_det_jacobian(y[i], event_ndims=1).numpy(),
            rtol=0,
            atol=1e-10,
        )


def test_stack_sample_and_log_prob_agrees_with_log_prob_through_the_inverse(rng):
    # sample_and_log_prob reuses the forward sweep's log-det; log_prob runs the inverse.
    stack = bijectors.Stack(planar(rng, batch=(6,)))
    q = tfp.distributions.TransformedDistribution(
        tfp.distributions.MultivariateNormalDiag(loc=tf.zeros(D, tf.float64)), stack
    )
    assert isinstance(q, tfp.distributions.TransformedDistribution)
    for run in (
        lambda f: f(),
        tf.function(lambda f: f()),
        tf.function(lambda f: f(), jit_compile=True),
    ):
        y, log_q = run(lambda: q.experimental_sample_and_log_prob(100, seed=[3, 4]))
        np.testing.assert_allclose(log_q.numpy(), q.log_prob(fresh(y)).numpy(), rtol=0, atol=1e-10)


def test_stack_needs_a_static_leading_axis(rng):
    with pytest.raises(ValueError, match="static leading batch axis K"):
        bijectors.Stack(planar(rng))


def test_stack_sample_and_log_prob_sweeps_the_flow_once(rng):
    # TFP calls forward(x) and then forward_log_det_jacobian(x); the second must
    # reuse the first sweep, or every training step pays for the flow twice.
    q = tfp.distributions.TransformedDistribution(
        tfp.distributions.MultivariateNormalDiag(loc=tf.zeros(D, tf.float64)),
        bijectors.Stack(planar(rng, batch=(4,))),
    )
    graph = (
        tf.function(q.experimental_sample_and_log_prob).get_concrete_function(10, seed=[1, 2]).graph
    )
    assert [op.type for op in graph.get_operations() if "While" in op.type] == ["StatelessWhile"]


def test_identity_u_makes_u_hat_zero(rng):
    from tfnf.bijectors.planar import identity_u

    w = rng.normal(size=(6, D))
    w[0] = 0.0  # where w = 0 the map is a shift by u tanh(b): u must be 0 too
    u = identity_u(tf.constant(w)).numpy()
    np.testing.assert_allclose(constrain_u(tf.constant(u), tf.constant(w)).numpy(), 0.0, atol=1e-15)
    np.testing.assert_array_equal(u[0], 0.0)


def test_float32_inverse_of_a_stiff_long_chain_is_as_accurate_as_its_conditioning_allows():
    # Issue 12's case: 6 planar maps whose raw u, w, b have sd 3, where f(f^-1(y)) in float32
    # is off by up to 2.6% (seed 6 below). The inverse's own error, against float64, stays
    # within a few float32 epsilons times cond(df/dz): the chain amplifies round-off, no one
    # map's solve loses accuracy (benchmarks/RESULTS.md).
    for seed in (3, 6, 13, 22):
        rng = np.random.default_rng(seed)
        u, w = 3 * rng.normal(size=(2, 6, 2))
        b = 3 * rng.normal(size=6)
        y = 3 * rng.normal(size=(5000, 2))
        chain64 = bijectors.Stack(bijectors.PlanarFlow(u, w, b))
        chain32 = bijectors.Stack(bijectors.PlanarFlow(*(p.astype(np.float32) for p in (u, w, b))))
        x64 = chain64.inverse(fresh(y)).numpy()
        x32 = chain32.inverse(fresh(y.astype(np.float32))).numpy()
        condition = np.linalg.cond(autodiff_jacobian(chain64.forward, x64))
        error = np.abs(x32 - x64).max(axis=-1) / np.maximum(1.0, np.abs(x64).max(axis=-1))
        assert np.all(error <= 1e-5 * np.maximum(1.0, condition))


# -- Sylvester's Q ------------------------------------------------------------------------


def test_orthonormal_q_is_orthonormal_and_spans_the_raw_columns(rng):
    raw = rng.normal(size=(4, 6, 3))
    q = bijectors.orthonormal_q(tf.constant(raw)).numpy()
    np.testing.assert_allclose(
        np.swapaxes(q, -1, -2) @ q, np.broadcast_to(np.eye(3), (4, 3, 3)), atol=1e-12
    )
    # the projection onto span(q) leaves raw's columns where they are
    np.testing.assert_allclose(q @ np.swapaxes(q, -1, -2) @ raw, raw, atol=1e-12)


def test_householder_q_is_the_product_of_the_reflections(rng):
    vectors = rng.normal(size=(2, 4, 5))  # batch 2, four reflections in D = 5
    q = bijectors.householder_q(tf.constant(vectors), num_columns=3).numpy()
    for i in range(2):
        product = np.eye(5)
        for v in vectors[i]:
            product = product @ (np.eye(5) - 2 * np.outer(v, v) / (v @ v))
        np.testing.assert_allclose(q[i], product[:, :3], atol=1e-12)
    np.testing.assert_array_equal(
        bijectors.permutation_q(3, reverse=True, dtype=tf.float64).numpy(), np.eye(3)[::-1]
    )


def test_sylvester_names_bad_shapes_and_checks_q_when_asked():
    q, r, b = np.eye(3)[:, :2], np.zeros((2, 2)), np.zeros(2)
    with pytest.raises(ValueError, match=r"`r` must be \[..., M, M\] with M = 2"):
        bijectors.Sylvester(q=q, r=np.zeros((3, 3)), r_tilde=r, b=b)
    with pytest.raises(ValueError, match=r"`b` must be \[..., M\] with M = 2"):
        bijectors.Sylvester(q=q, r=r, r_tilde=r, b=np.zeros(3))
    with pytest.raises(ValueError, match="M <= D"):
        bijectors.Sylvester(
            q=np.ones((2, 3)), r=np.zeros((3, 3)), r_tilde=np.zeros((3, 3)), b=np.zeros(3)
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="orthonormal columns"):
        bijectors.Sylvester(q=2 * q, r=r, r_tilde=r, b=b, validate_args=True).forward(np.zeros(3))


@pytest.mark.parametrize("below, layout", [(64, "columns"), (3, "rows")])
def test_stack_runs_events_from_columns_below_as_rows(below, layout, rng, monkeypatch):
    # A flow's own planar maps run on the batch's transpose for D < stack.COLUMNS_BELOW and on
    # the rows from there up (the faster layout at D >= 64, benchmarks/RESULTS.md); either way
    # the sweep gives what TFP's Chain of the maps gives.
    monkeypatch.setattr(bijectors.stack, "COLUMNS_BELOW", below)
    seen = []
    sweep = bijectors.stack._reversible_sweep

    def spy(step, constants, x, ldj, num_layers):
        seen.append(tuple(x.shape))
        return sweep(step, constants, x, ldj, num_layers)

    monkeypatch.setattr(bijectors.stack, "_reversible_sweep", spy)
    layers = elementary("planar", rng, batch=(4,))
    x = tf.constant(rng.normal(size=(7, D)))
    y, ldj = bijectors.Stack(layers).forward_and_log_det(x)
    assert seen == [(D, 7) if layout == "columns" else (7, D)]
    chain = chain_of_slices(layers, 4)
    np.testing.assert_allclose(y.numpy(), chain.forward(fresh(x)).numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        ldj.numpy(),
        chain.forward_log_det_jacobian(fresh(x), event_ndims=1).numpy(),
        rtol=0,
        atol=1e-12,
    )
