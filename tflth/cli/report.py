"""``tflth-report`` / ``bin/report.py``: tables and a plot from experiment directories.

Example: bin/report.py --experiments=runs/lottery_<hash>,runs/lottery_<hash2> --report_dir=report
"""

from __future__ import annotations

from absl import flags

from tflth import report
from tflth.cli import flags as tflags

FLAGS = flags.FLAGS
flags.DEFINE_list("experiments", [], "Experiment directories (lottery_<hash>) to report together.")
flags.DEFINE_string("report_dir", "report", "Where results.csv, results.md and results.png go.")
flags.DEFINE_string("title", None, "Plot title.")


def _collect(experiments: list[str]) -> list[dict]:
    rows = [row for d in experiments for row in report.collect(d)]
    if not rows:
        raise ValueError(f"no finished runs in {experiments}")
    return rows


def main(argv):
    del argv  # parse_flags_or_fail rejects positional arguments
    if not FLAGS.experiments:
        tflags.fail("--experiments: give one or more experiment directories (lottery_<hash>).")
    try:
        rows = tflags.exit_on_run_error(_collect, FLAGS.experiments)  # a damaged result file: exit 1
    except ValueError as e:
        tflags.fail(str(e))
    tflags.flags_are_valid()
    paths = tflags.exit_on_run_error(report.write_report, FLAGS.report_dir, rows, title=FLAGS.title)
    print(report.text_table(report.summarize(rows)))
    print("report: " + ", ".join(paths.values()))


def run():
    tflags.run(main)


if __name__ == "__main__":
    run()
