#!/usr/bin/env python3
"""Report experiments: see `tflth-report --help` (tflth/cli/report.py)."""

import os

os.environ["TFLTH_CLI"] = "1"  # see tflth/_startup.py

from tflth.cli.report import run  # noqa: E402

if __name__ == "__main__":
    run()
