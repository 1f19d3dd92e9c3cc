"""``python -m bench.history``: the command line of bench.analysis.history."""
import sys

from bench.analysis.history import main

if __name__ == "__main__":
    sys.exit(main())
