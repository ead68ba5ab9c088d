"""``tflth-prune`` / ``bin/prune.py``: IMP with rewinding, controls and a report."""

from __future__ import annotations

from absl import app

from tflth import report
from tflth.cli import flags as tflags
from tflth.lottery import LotteryJob

FLAGS = tflags.FLAGS
tflags.define_pruning_flags()


def job_from_flags() -> LotteryJob:
    pruning, lottery = tflags.pruning_hparams(FLAGS)
    return LotteryJob(run=tflags.run_hparams(FLAGS), pruning=pruning, lottery=lottery,
                      output_dir=FLAGS.output_dir, data_dir=FLAGS.data_dir, strategy=FLAGS.strategy,
                      eval_every=FLAGS.eval_every or None, checkpoint_every=FLAGS.checkpoint_every or None)


def _progress(row: dict) -> None:
    print(f"replicate {row['replicate']} level {row['level']:2d} {row['method']:<13} "
          f"density {100 * row['density']:6.2f}%  test accuracy {100 * row['test_accuracy']:.2f}%", flush=True)


def main(argv):
    del argv  # parse_flags_or_fail rejects positional arguments
    job, dataset = tflags.prepare_or_fail(job_from_flags)
    print(f"experiment {job.experiment_dir}: {job.label}; data: {dataset.source}", flush=True)
    rows = tflags.exit_on_divergence(job.run_all, dataset, on_level=_progress)
    summary = report.summarize(rows)
    paths = report.write_report(job.experiment_dir, rows, title=job.label)
    print(report.text_table(summary))
    print("report: " + ", ".join(paths.values()))


def run():
    app.run(main, flags_parser=tflags.parse_flags_or_fail)


if __name__ == "__main__":
    run()
