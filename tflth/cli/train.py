"""``tflth-train`` / ``bin/train.py``: train one network, resumably."""

from __future__ import annotations

import sys

import tensorflow as tf
from absl import app, logging

from tflth.cli import flags as tflags
from tflth.training import TrainingDiverged
from tflth.training.job import TrainJob

FLAGS = tflags.FLAGS
tflags.define_training_flags()


def job_from_flags() -> TrainJob:
    return TrainJob(
        hparams=tflags.run_hparams(FLAGS),
        output_dir=FLAGS.output_dir,
        data_dir=FLAGS.data_dir,
        save_steps=tuple(FLAGS.save_steps),
        eval_every=FLAGS.eval_every or None,
        checkpoint_every=FLAGS.checkpoint_every or None,
        strategy=FLAGS.strategy,
    )


def main(argv):
    if len(argv) > 1:
        tflags.fail(f"unexpected arguments {argv[1:]}")
    try:
        job = job_from_flags()
        dataset = job.prepare()
    except ValueError as e:
        tflags.fail(str(e))
    tflags.flags_are_valid()
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        result = job.run(dataset)
    except TrainingDiverged as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    result = result if isinstance(result, dict) else result.to_dict()
    print(f"run_dir={job.run_dir} step={result['step']} test_accuracy={result['test_accuracy']:.4f} "
          f"test_loss={result['test_loss']:.4f}")


def run():
    app.run(main, flags_parser=tflags.parse_flags_or_fail)


if __name__ == "__main__":
    run()
