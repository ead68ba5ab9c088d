"""One worker of the multi-worker test (run as a subprocess by test_distributed.py).

usage: multiworker_job.py DATA_NPZ OUT_NPZ [WORKER_INDEX PORT0,PORT1,...]
Without a worker index it trains on the default strategy (the single-worker baseline).
"""

import json
import os
import sys

data_path, out_path = sys.argv[1], sys.argv[2]
if len(sys.argv) > 3:
    index, ports = int(sys.argv[3]), sys.argv[4].split(",")
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    )

import numpy as np  # noqa: E402

from tflth import data as data_lib  # noqa: E402
from tflth.hparams import DatasetHparams, ModelHparams, RunHparams, TrainingHparams  # noqa: E402
from tflth.training import Trainer, get_strategy, is_chief  # noqa: E402

strategy = get_strategy("multi_worker" if len(sys.argv) > 3 else "default")
hp = RunHparams(DatasetHparams("mnist"), ModelHparams("lenet_32_16"),
                TrainingHparams(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=32, training_steps="20it",
                                seed=1, data_order_seed=2))
trainer = Trainer(hp, dataset=data_lib.load("mnist", data_dir=data_path), strategy=strategy)
trainer.train()
if is_chief():
    np.savez(out_path, replicas=strategy.num_replicas_in_sync, **trainer.get_weights())
print("done", trainer.step)
