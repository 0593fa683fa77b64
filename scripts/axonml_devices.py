#!/usr/bin/env python3
"""Run ``axonml-devices`` from a checkout: ``python scripts/axonml_devices.py [--json] [--bench] ...``."""

import sys
from pathlib import Path

# From a checkout that was never pip-installed, the package sits one level up from this script.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from axonml_autograd.devices_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
