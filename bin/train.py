#!/usr/bin/env python3
"""Train one network: see `tflth-train --help` (tflth/cli/train.py)."""

import os

os.environ["TFLTH_CLI"] = "1"  # see tflth/_startup.py

from tflth.cli.train import run  # noqa: E402

if __name__ == "__main__":
    run()
