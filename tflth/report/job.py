"""A report job (``bin/report.py``): IMP experiments or stability sweeps → tables and plots.

:class:`ReportJob` is configuration as data, like every job: its fields carry their
help and generate the binary's flags (:mod:`tflth.cli.flags`); ``prepare()`` checks
everything and reads the result rows, writing nothing; ``run()`` writes the report.
"""

from __future__ import annotations

import dataclasses
import math
import os

from tflth.conventions import MATCH_MARGIN, STABLE_THRESHOLD, from_points, to_points
from tflth.hparams import HparamError, field, field_error
from tflth.report import imp, stability
from tflth.runs.dirs import output_dir_problem

__all__ = ["ReportJob"]

_R = "ReportJob"


def _points(name: str):
    """A flag in percentage points <-> the fraction the library computes with."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise field_error(_R, name, text, "is invalid: expected a finite number of points.")
        return from_points(value)
    return parse, lambda fraction: str(round(to_points(fraction), 10))


@dataclasses.dataclass(frozen=True)
class ReportJob:
    """One report of IMP experiments (``experiments``) or of stability sweeps (``sweeps``).

    Args:
        experiments: experiment directories (``lottery_<hash>``) reported together
            (``results.csv``, ``results_summary.csv``, ``results.md``, ``results.png``).
        sweeps: stability sweep directories (``stability_<hash>``) reported together
            (``stability.csv``, ``stability.md``, ``instability.png``, ``curves_*.png``).
        labels: a name per directory, in order (default: each run's own label).
        report_dir: where the files go.
        title: the plots' title.
        match_margin: δ of "matches dense" / "IMP beats <control>", a fraction (0.005 is
            0.5 points; :mod:`tflth.report.stats`).
        stable_threshold: τ of "stable", a fraction of test error (sweeps only).
        controls: the registered control names (``tflth.lottery.starts.CONTROLS``): the
            report does not import the lottery package, its caller names them.
        one_shot: the registered one-shot method names (``tflth.pruning.one_shot_names()``)
            whose runs beside IMP an experiment may hold (experiments only).

    Example::

        job = ReportJob(experiments=("runs/lottery_<hash>",), report_dir="report",
                        controls=tuple(tflth.lottery.starts.CONTROLS))
        written = job.run(job.prepare())   # {name: path}
    """

    experiments: tuple[str, ...] = field((), "Experiment directories (lottery_<hash>) to report together.")
    sweeps: tuple[str, ...] = field((), "Stability sweep directories (stability_<hash>) to report together.")
    labels: tuple[str, ...] = field((), "Names for the directories, one per --experiments/--sweeps entry, in order "
                                        "(default: each run's own label).")
    report_dir: str = field("report", "Where the tables and plots go.")
    title: str | None = field(None, "Plot title.")
    match_margin: float = field(MATCH_MARGIN, "δ in accuracy points: \"matches dense\" is yes when the 95 % Welch "
                                "interval of (method − dense) lies above −δ; \"IMP beats <control>\" is no when the "
                                "interval of (IMP − control) lies within ±δ (docs/statistics.md).",
                                text=_points("match_margin"))
    stable_threshold: float = field(STABLE_THRESHOLD, "--sweeps: test instability threshold in points: \"stable\" is "
                                    "yes when the 95 % t interval of the mean instability lies below it "
                                    "(docs/statistics.md).", text=_points("stable_threshold"))
    controls: tuple[str, ...] = ()
    one_shot: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("experiments", "sweeps", "labels", "controls", "one_shot"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.experiments and not self.sweeps:
            raise HparamError(f"{_R}.experiments or {_R}.sweeps: give one or more experiment (lottery_<hash>) or "
                              "stability sweep (stability_<hash>) directories.", owner=_R, field="experiments")
        if self.experiments and self.sweeps:
            raise HparamError(f"{_R}.experiments and {_R}.sweeps: give one kind at a time (each has its own "
                              "report).", owner=_R, field="experiments")
        if not self.match_margin >= 0:
            raise field_error(_R, "match_margin", f"{to_points(self.match_margin):g}", "is invalid: expected a "
                              f"number of accuracy points >= 0 (default {to_points(MATCH_MARGIN):g}).")
        if not self.stable_threshold > 0:
            raise field_error(_R, "stable_threshold", f"{to_points(self.stable_threshold):g}", "is invalid: expected "
                              f"a number of points > 0 (default {to_points(STABLE_THRESHOLD):g}).")
        if self.labels and len(self.labels) != len(self.directories):
            raise HparamError(f"{_R}.labels has {len(self.labels)} names for {len(self.directories)} directories; "
                              "give one each.", owner=_R, field="labels")
        if len({os.path.realpath(d) for d in self.directories}) != len(self.directories):
            raise HparamError(f"{_R}.{self.key}s names a directory twice: {list(self.directories)}.", owner=_R,
                              field=f"{self.key}s")

    @property
    def kind(self):
        """The report module: :mod:`tflth.report.imp` or :mod:`tflth.report.stability`."""
        return imp if self.experiments else stability

    @property
    def key(self) -> str:
        return "experiment" if self.experiments else "sweep"

    @property
    def directories(self) -> tuple[str, ...]:
        return self.experiments or self.sweeps

    @property
    def options(self) -> dict:
        """The verdicts' settings ``write_report`` and ``summarize`` take."""
        out = {"match_margin": self.match_margin}
        if self.sweeps:
            out["stable_threshold"] = self.stable_threshold
        return out

    def names(self) -> list[str]:
        """What names each directory in the report: its own name (``lottery_<hash>``), or,
        when two given directories share one (the same experiment copied and rerun
        elsewhere), the path as given, so that each directory stays one table."""
        names = [os.path.basename(os.path.normpath(d)) for d in self.directories]
        if len(set(names)) == len(names):
            return names
        return [os.path.normpath(d) for d in self.directories]

    def prepare(self) -> list[dict]:
        """Check the report directory and read every directory's result rows. Writes nothing."""
        problem = output_dir_problem(self.report_dir)
        if problem:
            raise field_error(_R, "report_dir", self.report_dir, f"{problem}; expected a directory that exists or "
                              "can be made.")
        names = self.names()
        rows = [dict(row, **{self.key: names[i]}, **({"label": self.labels[i]} if self.labels else {}))
                for i, d in enumerate(self.directories) for row in self._collect(d)]
        if not rows:
            raise HparamError(f"no finished runs in {list(self.directories)}")
        return rows

    def _collect(self, directory: str) -> list[dict]:
        if self.experiments:
            return imp.collect(directory, self.controls, one_shot=self.one_shot)
        return stability.collect(directory, self.controls)

    def run(self, rows: list[dict] | None = None) -> dict[str, str]:
        """Write the report of ``rows`` (default: :meth:`prepare`'s); returns ``{name: path}``."""
        rows = rows if rows is not None else self.prepare()
        return self.kind.write_report(self.report_dir, rows, title=self.title, **self.options)
