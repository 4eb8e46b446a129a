"""meshfleet benchmarks: a thin wrapper of ``meshfleet bench`` (figures only).

    .venv/bin/python tools/bench.py SCENARIO [--runs 3] [options]

Scenarios: requests, register, upload, api, reload, memory, soak; see
:mod:`emulator.lab.bench` and tools/BENCHMARKS.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.cli.bench import bench  # noqa: E402

if __name__ == "__main__":
    bench()
