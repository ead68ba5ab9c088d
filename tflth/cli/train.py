"""``tflth-train`` / ``bin/train.py``: train one network, resumably.

Writes the run to --output_dir/train_<hash> (named by its hyperparameters; rerunning the
same command resumes a killed run, or reports a finished one).

Example: bin/train.py --preset=lenet_300_100_mnist --training_steps=2ep
"""

from __future__ import annotations

from tflth.cli import flags as tflags
from tflth.cli import harness
from tflth.training.job import TrainJob, result_summary

FLAGS = tflags.FLAGS
tflags.define_training_flags()


def job_from_flags() -> TrainJob:
    return TrainJob(tflags.run_hparams(FLAGS), **tflags.values(TrainJob))


def main(argv):
    del argv  # parse_flags_or_fail rejects positional arguments
    job, dataset = harness.prepare_or_fail(job_from_flags)
    result = harness.exit_on_run_error(job.run, dataset)
    result = result if isinstance(result, dict) else result.to_dict()
    print(f"run_dir={job.run_dir} step={result['step']} {result_summary(result)}")


def run():
    harness.run(main)


if __name__ == "__main__":
    run()
