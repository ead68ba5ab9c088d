"""``tflth-report`` / ``bin/report.py``: tables and plots from IMP experiments or stability sweeps.

--experiments (lottery_<hash> directories of bin/prune.py) give results.csv,
results_summary.csv, results.md and results.png; --sweeps (stability_<hash> directories
of bin/stability.py, e.g. one per learning rate) give stability.csv, stability.md,
instability.png (one line per sweep and setting) and curves_*.png, in --report_dir. Every table gives 95 % intervals and the
verdicts "matches dense", "IMP beats <control>" and "stable" (yes / no / undecided) by the
rules of tflth/report/stats.py (docs/statistics.md): --match_margin is their margin δ,
--stable_threshold the instability threshold, both in points.

Example: bin/report.py --experiments=runs/lottery_<hash>,runs/lottery_<hash2> --report_dir=report
Example: bin/report.py --sweeps=runs/stability_<hash>,runs/stability_<hash2> --report_dir=report
"""

from __future__ import annotations

from tflth.cli import flags as tflags
from tflth.cli import harness
from tflth.lottery.starts import CONTROLS
from tflth.pruning import one_shot_names
from tflth.report.job import ReportJob

FLAGS = tflags.FLAGS
tflags.define(ReportJob)


class _Command:
    """The job behind the flags, for :func:`harness.prepare_or_fail` (errors name flags)."""

    def __init__(self):
        self.job = ReportJob(**tflags.values(ReportJob), controls=tuple(CONTROLS), one_shot=tuple(one_shot_names()))

    def prepare(self):
        return harness.exit_on_run_error(self.job.prepare)  # a damaged result file: exit 1, one line


def main(argv):
    del argv  # parse_flags_or_fail rejects positional arguments
    command, rows = harness.prepare_or_fail(_Command)
    job = command.job
    paths = harness.exit_on_run_error(job.run, rows)
    print(job.kind.text_table(job.kind.summarize(rows, **job.options)))
    print("report: " + ", ".join(paths.values()))


def run():
    harness.run(main)


if __name__ == "__main__":
    run()
