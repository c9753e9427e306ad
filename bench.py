#!/usr/bin/env python3
"""Command line of the FastAPI pattern benchmark: `python bench.py run | report | list`."""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
