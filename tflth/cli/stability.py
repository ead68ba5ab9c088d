"""``tflth-stability`` / ``bin/stability.py``: instability of a network or IMP subnetworks vs k.

For each rewind step k (--rewind_steps), trains the dense network once to k (the
parent), then --pairs pairs of copies from W_k with different data order and
augmentation, to the end of training; measures their L2 distances and the error along
the straight line between them (instability = the error barrier, on test and train
data). With --experiment (an IMP experiment of bin/prune.py) it analyses the masks of
--levels and the --controls on them instead, reusing the experiment's W_k and masks:
the same masks, found with the experiment's rewind step, at every k. With several
--experiment=A,B,... (experiments that differ only in their --rewind_step) each k uses
the experiment rewound to k, its masks, controls and W_k (the paper's "IMP subnetwork at
k"); every k of --rewind_steps needs one, and without --rewind_steps the ks are theirs.
Writes --output_dir/stability_<hash> (rerunning resumes a killed sweep and reuses every
finished copy; --shard=I/N splits a sweep between N processes) and a report in its
report/ directory: stability.csv, stability.md, instability.png, curves_*.png.

Example: bin/stability.py --preset=lenet_300_100_mnist --rewind_steps=0it,100it,500it --pairs=3
Per k:   bin/stability.py --preset=lenet_300_100_mnist --experiment=runs/lottery_A,runs/lottery_B --levels=4
"""

from __future__ import annotations

from tflth.cli import flags as tflags
from tflth.cli import harness
from tflth.lottery import starts
from tflth.report import stability as report
from tflth.stability.sweep import StabilityJob
from tflth.training.strategy import is_chief

FLAGS = tflags.FLAGS
tflags.define_stability_flags()


def job_from_flags() -> StabilityJob:
    return StabilityJob(tflags.run_hparams(FLAGS), tflags.stability_hparams(FLAGS), **tflags.values(StabilityJob))


def _progress(pair: dict) -> None:
    curve = pair["curve"]
    train = curve.get("train") or {}
    print(f"replicate {pair['replicate']} level {pair['level']} {pair['method']:<13} k={pair['k']}it "
          f"pair {pair['pair']}: test instability {100 * curve['test']['instability']:.2f} pts"
          + (f", train {100 * train['instability']:.2f} pts" if train else "")
          + f", L2 {pair['distances']['total']['l2']:.4g}"
          + (_aligned_text(pair["aligned"]) if pair.get("aligned") else ""), flush=True)


def _aligned_text(aligned: dict) -> str:
    train = aligned["curve"].get("train") or {}
    return (f"; aligned by {aligned['method']} ({aligned['groups_permuted']} groups permuted): test instability "
            f"{100 * aligned['curve']['test']['instability']:.2f} pts"
            + (f", train {100 * train['instability']:.2f} pts" if train else "")
            + f", L2 {aligned['distances']['total']['l2']:.4g}")


def main(argv):
    del argv  # parse_flags_or_fail rejects positional arguments
    job, dataset = harness.prepare_or_fail(job_from_flags)
    sweep = job.sweep
    print(f"sweep {sweep.path}: {job.label}; data: {dataset.source}", flush=True)
    mine = harness.exit_on_run_error(job.run_all, dataset, on_pair=_progress)
    if not is_chief():  # one writer under MultiWorkerMirroredStrategy: the chief reports
        print(report.text_table(report.summarize(mine)))
        return
    pairs = harness.exit_on_run_error(report.collect, sweep.path, tuple(starts.CONTROLS))
    out = harness.exit_on_run_error(report.write_report, sweep.report_dir, pairs, title=job.label)
    print(report.text_table(report.summarize(pairs)))
    print("report: " + ", ".join(out.values()))


def run():
    harness.run(main)


if __name__ == "__main__":
    run()
