"""Runs on disk, in one package: their layout, their names and their directories.

* :mod:`tflth.runs.layout` — the one place that names and lists the files of tflth's
  runs (train runs, IMP experiments, stability sweeps);
* :mod:`tflth.runs.naming` — which hyperparameters name a run and the hash that names
  its directory (and tflth 0.1's names);
* :mod:`tflth.runs.dirs` — where run directories may go, opening one for a run, reading
  what a finished run left;
* :mod:`tflth.runs.lock` — a lock file beside a run shared by several processes.

No other module of tflth builds run directories or their names.
"""

from tflth.runs import dirs, layout, lock, naming
from tflth.runs.dirs import (check_output_dir, last_evals_range, named_run_dir, open_run_dir, output_dir_problem,
                             read_result)
from tflth.runs.layout import RunDir, Experiment, Sweep
from tflth.runs.lock import RunLock
from tflth.runs.naming import identity, legacy_hash, non_default, run_hash

__all__ = ["dirs", "layout", "lock", "naming", "RunDir", "Experiment", "Sweep", "RunLock", "check_output_dir",
           "last_evals_range", "named_run_dir", "open_run_dir", "output_dir_problem", "read_result", "identity",
           "legacy_hash", "non_default", "run_hash"]
