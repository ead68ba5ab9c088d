#!/usr/bin/env python3
"""Export a trained ticket (baked, shrunk, compressed, LiteRT): see `tflth-export --help` (tflth/cli/export.py)."""

import os

os.environ["TFLTH_CLI"] = "1"  # see tflth/_startup.py

from tflth.cli.export import run  # noqa: E402

if __name__ == "__main__":
    run()
