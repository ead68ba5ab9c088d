"""``tflth-prune`` / ``bin/prune.py``: IMP with rewinding, controls and a report.

Trains the dense network (level 0), then prunes and retrains it --levels times, each
level from the --rewind_step state of level 0 (--reset), plus any --controls; writes the
experiment to --output_dir/lottery_<hash> (rerunning resumes it) and a report there.

Example: bin/prune.py --preset=lenet_300_100_mnist --levels=3 --rewind_step=0it --controls=random_reinit
"""

from __future__ import annotations

from tflth import report
from tflth.cli import flags as tflags
from tflth.cli import harness
from tflth.lottery import LotteryJob
from tflth.training.kit import JobSettings
from tflth.training.strategy import is_chief

FLAGS = tflags.FLAGS
tflags.define_pruning_flags()


def job_from_flags() -> LotteryJob:
    pruning, lottery = tflags.pruning_hparams(FLAGS)
    return LotteryJob(tflags.run_hparams(FLAGS), pruning, lottery, **tflags.values(JobSettings))


def _progress(row: dict) -> None:
    metric = row.get("metric", "accuracy")
    value = row[f"test_{metric}"]
    shown = f"test accuracy {100 * value:.2f}%" if metric == "accuracy" else f"test {metric} {value:.4f}"
    print(f"replicate {row['replicate']} level {row['level']:2d} {row['method']:<28} "
          f"density {100 * row['density']:6.2f}%  {shown}", flush=True)


def main(argv):
    del argv  # parse_flags_or_fail rejects positional arguments
    job, dataset = harness.prepare_or_fail(job_from_flags)
    print(f"experiment {job.experiment_dir}: {job.label}; data: {dataset.source}", flush=True)
    rows = harness.exit_on_run_error(job.run_all, dataset, on_level=_progress)
    print(report.text_table(report.summarize(rows)))
    if is_chief():  # one writer under MultiWorkerMirroredStrategy
        paths = harness.exit_on_run_error(report.write_report, job.experiment_dir, rows, title=job.label)
        print("report: " + ", ".join(paths.values()))


def run():
    harness.run(main)


if __name__ == "__main__":
    run()
