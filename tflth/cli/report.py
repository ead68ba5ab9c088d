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

import os

from absl import flags

from tflth import fileio, report
from tflth.cli import flags as tflags
from tflth.report import stats
from tflth.stability import report as stability_report
from tflth.stability.curve import STABLE_THRESHOLD

FLAGS = flags.FLAGS
flags.DEFINE_list("experiments", [], "Experiment directories (lottery_<hash>) to report together.")
flags.DEFINE_list("sweeps", [], "Stability sweep directories (stability_<hash>) to report together.")
flags.DEFINE_list("labels", [], "Names for the directories, one per --experiments/--sweeps entry, in order "
                                "(default: each run's own label).")
flags.DEFINE_string("report_dir", "report", "Where the tables and plots go.")
flags.DEFINE_string("title", None, "Plot title.")
flags.DEFINE_float("match_margin", stats.MATCH_MARGIN * 100, "δ in accuracy points: \"matches dense\" is yes when the "
                   "95 % Welch interval of (method − dense) lies above −δ; \"IMP beats <control>\" is no when the "
                   "interval of (IMP − control) lies within ±δ (docs/statistics.md).")
flags.DEFINE_float("stable_threshold", STABLE_THRESHOLD * 100, "--sweeps: test instability threshold in points: "
                   "\"stable\" is yes when the 95 % t interval of the mean instability lies below it "
                   "(docs/statistics.md).")


def _names(directories: list[str]) -> list[str]:
    """What names each directory in the report: its own name (``lottery_<hash>``), or, when
    two given directories share one (the same experiment copied and rerun elsewhere), the
    path as given, so that each directory stays one table."""
    names = [os.path.basename(os.path.normpath(d)) for d in directories]
    if len(set(names)) == len(names):
        return names
    return [os.path.normpath(d) for d in directories]


def _collect(directories: list[str], collect, labels: list[str], key: str) -> list[dict]:
    if labels and len(labels) != len(directories):
        raise ValueError(f"--labels has {len(labels)} names for {len(directories)} directories; give one each.")
    if len({os.path.realpath(d) for d in directories}) != len(directories):
        raise ValueError(f"--{key}s names a directory twice: {directories}.")
    names = _names(directories)
    rows = [dict(row, **{key: names[i]}, **({"label": labels[i]} if labels else {}))
            for i, d in enumerate(directories) for row in collect(d)]
    if not rows:
        raise ValueError(f"no finished runs in {directories}")
    return rows


def main(argv):
    del argv  # parse_flags_or_fail rejects positional arguments
    if not FLAGS.experiments and not FLAGS.sweeps:
        tflags.fail("--experiments or --sweeps: give one or more experiment (lottery_<hash>) or stability sweep "
                    "(stability_<hash>) directories.")
    if FLAGS.experiments and FLAGS.sweeps:
        tflags.fail("--experiments and --sweeps: give one kind at a time (each has its own report).")
    kind = report if FLAGS.experiments else stability_report
    if not FLAGS.match_margin >= 0:
        tflags.fail(f"--match_margin={FLAGS.match_margin:g} is invalid: expected a number of accuracy points >= 0 "
                    f"(default {stats.MATCH_MARGIN * 100:g}).")
    if not FLAGS.stable_threshold > 0:
        tflags.fail(f"--stable_threshold={FLAGS.stable_threshold:g} is invalid: expected a number of points > 0 "
                    f"(default {STABLE_THRESHOLD * 100:g}).")
    options = {"match_margin": FLAGS.match_margin / 100}
    if FLAGS.sweeps:
        options["stable_threshold"] = FLAGS.stable_threshold / 100
    problem = fileio.output_dir_problem(FLAGS.report_dir)
    if problem:
        tflags.fail(f"--report_dir={FLAGS.report_dir} {problem}; expected a directory that exists or can be made.")
    try:  # a damaged result file: exit 1
        rows = tflags.exit_on_run_error(_collect, FLAGS.experiments or FLAGS.sweeps, kind.collect, FLAGS.labels,
                                        "experiment" if FLAGS.experiments else "sweep")
    except ValueError as e:
        tflags.fail(str(e))
    tflags.flags_are_valid()
    paths = tflags.exit_on_run_error(kind.write_report, FLAGS.report_dir, rows, title=FLAGS.title, **options)
    print(kind.text_table(kind.summarize(rows, **options)))
    print("report: " + ", ".join(str(p) for v in paths.values() for p in (v if isinstance(v, list) else [v])))


def run():
    tflags.run(main)


if __name__ == "__main__":
    run()
