"""``python -m bench.report OUT/<device>/results.json``: re-render a run's files (bench.report.files.main)."""
from __future__ import annotations

import sys

from bench.report.files import main

sys.exit(main())
