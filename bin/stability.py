#!/usr/bin/env python3
"""Stability of networks and IMP subnetworks vs the rewind step: see `tflth-stability --help`
(tflth/cli/stability.py)."""

import os

os.environ["TFLTH_CLI"] = "1"  # see tflth/_startup.py

from tflth.cli.stability import run  # noqa: E402

if __name__ == "__main__":
    run()
