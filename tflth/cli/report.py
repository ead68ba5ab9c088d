"""``tflth-report`` / ``bin/report.py``: tables and a plot from experiment directories."""

from __future__ import annotations

from absl import app, flags

from tflth import report
from tflth.cli import flags as tflags

FLAGS = flags.FLAGS
flags.DEFINE_list("experiments", [], "Experiment directories (lottery_<hash>) to report together.")
flags.DEFINE_string("report_dir", "report", "Where results.csv, results.md and results.png go.")
flags.DEFINE_string("title", None, "Plot title.")


def main(argv):
    del argv  # parse_flags_or_fail rejects positional arguments
    if not FLAGS.experiments:
        tflags.fail("--experiments: give one or more experiment directories (lottery_<hash>).")
    try:
        rows = [row for d in FLAGS.experiments for row in report.collect(d)]
        if not rows:
            raise ValueError(f"no finished runs in {FLAGS.experiments}")
    except ValueError as e:
        tflags.fail(str(e))
    tflags.flags_are_valid()
    paths = report.write_report(FLAGS.report_dir, rows, title=FLAGS.title)
    print(report.text_table(report.summarize(rows)))
    print("report: " + ", ".join(paths.values()))


def run():
    app.run(main, flags_parser=tflags.parse_flags_or_fail)


if __name__ == "__main__":
    run()
