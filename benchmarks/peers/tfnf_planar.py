"""tfnf: `NormalizingFlow(num_layers=K)` on a fixed base through `fit`, as a user trains it.

    python benchmarks/peers/tfnf_planar.py --layers 32 --dim 2 --per-call 10

`--per-call` is Keras' `steps_per_execution`. The first-step time runs from
building the model to the end of its first step (tracing and XLA included).
"""

import common  # noqa: I001  (first: it starts the import clock)

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

import tfnf  # noqa: E402

imported = common.time.perf_counter()


def main():
    args = common.arguments()
    K, D, B = args.layers, args.dim, args.batch
    if D == 2:
        target = "U1"
    else:
        scales = tf.constant(common.gaussian_scales(D))
        target = tfp.distributions.MultivariateNormalDiag(tf.zeros(D), scale_diag=scales)

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(common.time.perf_counter())

    ends, losses = [], []
    start = common.time.perf_counter()
    keras.utils.set_random_seed(0)
    model = tfnf.NormalizingFlow(
        event_size=D, num_layers=K, target_log_prob=target, trainable_base=False, seed=0
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=args.per_call)
    calls = 1 + max(1, args.steps // args.per_call)
    history = model.fit(
        steps=calls * args.per_call,
        steps_per_epoch=calls * args.per_call,
        batch_size=B,
        verbose=0,
        callbacks=[Clock()],
    )
    losses = history.history["loss"]
    per_call = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    record = {
        "ms_per_step": 1000 * common.statistics.median(per_call) / args.per_call,
        "first_step_s": ends[0] - start,
        "import_s": imported - common.IMPORT_START,
    }
    if args.check:
        record["loss"] = float(losses[-1])
    print(common.json.dumps(record))


if __name__ == "__main__":
    main()
