"""Print the ratio table of a pytest-benchmark JSON file: ``python bench/report.py FILE``.

``vastar bench`` runs the suite and prints the same table; this is for saved runs.
"""

import json
import sys

from vastar_fast.bench_cli import ratio_table

if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        print("\n".join(ratio_table(json.load(f))))
