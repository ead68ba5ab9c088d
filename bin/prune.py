#!/usr/bin/env python3
"""Find lottery tickets with IMP: see `tflth-prune --help` (tflth/cli/prune.py)."""

import os

os.environ["TFLTH_CLI"] = "1"  # see tflth/_startup.py

from tflth.cli.prune import run  # noqa: E402

if __name__ == "__main__":
    run()
