"""Run by tests/test_vae_training.py: FlowVAE and NormalizingFlow under MultiWorkerMirroredStrategy.

    python tests/multi_worker_check.py  # starts two workers on 127.0.0.1, prints one JSON line

Each worker is a separate interpreter with its own `TF_CONFIG` (one CPU device
each), as on a cluster of two hosts; they talk over two local ports and nothing
else. Worker 0 prints its weights after training; the parent trains the same
models on one device (no strategy) and prints the differences.
"""

import json
import os
import socket
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

GLOBAL_BATCH = 20


def images(n, size, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    protos = rng.random((2, size)) < 0.5
    return (protos[rng.integers(2, size=n)] ^ (rng.random((n, size)) < 0.05)).astype("float64")


def train(strategy):
    """Weights (lists of floats) of a FlowVAE and a NormalizingFlow trained under `strategy`, and
    their last logs.
    """
    import keras

    from tfnf.models import FlowVAE, NormalizingFlow

    x = images(60, 12)  # 3 global batches of 20
    with strategy.scope():
        keras.utils.set_random_seed(0)
        vae = FlowVAE(
            latent_size=2, hidden_units=6, num_layers=2, data_size=12, seed=3, dtype="float64"
        )
        vae.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
        keras.utils.set_random_seed(0)
        flow = NormalizingFlow(
            event_size=2, num_layers=3, target_log_prob="U1", seed=3, dtype="float64"
        )
        flow.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    vae_logs = vae.fit(x, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0).history
    flow_logs = flow.fit(steps=3, steps_per_epoch=3, batch_size=64, verbose=0).history
    return {
        "vae": [v.numpy().ravel().tolist() for v in vae.trainable_variables],
        "flow": [v.numpy().ravel().tolist() for v in flow.trainable_variables],
        "vae_loss": vae_logs["loss"][-1],
        "flow_loss": flow_logs["loss"][-1],
    }


def worker():
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    out = train(strategy)
    out["replicas"] = strategy.num_replicas_in_sync
    print(json.dumps(out))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
            "CUDA_VISIBLE_DEVICES": "",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "worker"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        if p.returncode:
            sys.exit(f"a worker failed:\n{err[-3000:]}")
    workers = [json.loads(o.strip().splitlines()[-1]) for o, _ in outputs]

    import numpy as np
    import tensorflow as tf

    one = train(tf.distribute.get_strategy())

    def diff(a, b):
        return max(
            float(np.abs(np.array(p) - np.array(q)).max()) for p, q in zip(a, b, strict=True)
        )

    print(
        json.dumps(
            {
                "replicas": workers[0]["replicas"],
                "vae_moved": diff(one["vae"], train_untrained_weights()["vae"]),
                "vae_vs_one_device": diff(workers[0]["vae"], one["vae"]),
                "vae_workers_agree": diff(workers[0]["vae"], workers[1]["vae"]),
                "flow_vs_one_device": diff(workers[0]["flow"], one["flow"]),
                "vae_loss_vs_one_device": abs(workers[0]["vae_loss"] - one["vae_loss"]),
                "flow_loss_vs_one_device": abs(workers[0]["flow_loss"] - one["flow_loss"]),
            }
        )
    )


def train_untrained_weights():
    import keras

    from tfnf.models import FlowVAE

    keras.utils.set_random_seed(0)
    vae = FlowVAE(
        latent_size=2, hidden_units=6, num_layers=2, data_size=12, seed=3, dtype="float64"
    )
    return {"vae": [v.numpy().ravel().tolist() for v in vae.trainable_variables]}


if __name__ == "__main__":
    sys.exit(worker() if sys.argv[1:] == ["worker"] else main())
