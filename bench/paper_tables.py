"""The paper's Tables 2, 3 and 5 (Wang & Ponce, ICLR 2021) on what is here; saves JSON.

Thin front over ``jobs.paper_tables_cmd`` (definitions there, and ``gangeo
paper-tables``): the same options, the JSON written to
``bench/results/paper_tables.json`` unless ``--out`` says otherwise.

    python bench/paper_tables.py [--generator dcgan-faces ...] [--n 20] [--seed 0] [--format table]
"""

from __future__ import annotations

import sys
from pathlib import Path

from jobs.paper_tables_cmd import main

OUT = Path(__file__).resolve().parent / "results" / "paper_tables.json"

if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(main(argv if "--out" in argv else [*argv, "--out", str(OUT)]))
