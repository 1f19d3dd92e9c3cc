"""``python -m bench.compare``: the command line of bench.analysis.compare."""
import sys

from bench.analysis.compare import main

if __name__ == "__main__":
    sys.exit(main())
