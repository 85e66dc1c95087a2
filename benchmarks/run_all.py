"""Run every benchmark in this folder, one after another, each with its own figures.

Pass arguments through to every benchmark, e.g. ``--n 100000`` for a quick run, or
``--quick`` alone for each benchmark's own quick mode (``_quick.py``: the CI sizes).

Every ``*.py`` here not starting with ``_`` is run (``_*.py`` are shared helpers).
employee_access builds a 10-million-customer SQLite file once (a few minutes, ~4 GB,
cached in ``benchmarks/.cache/``, git-ignored; it refuses to start with too little free disk)
and takes ``--n`` as its number of timed pairs.

leak_scenarios runs seeded marketplaces with injected leaks through the real detection code
(``--scenarios``, ``--quick``); guilt_ranking builds a large alias set once (cached in
``benchmarks/.cache/``, git-ignored; ``--rows``, ``--quick``). Both ignore flags meant for
the other benchmarks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _quick import QUICK  # noqa: E402


def main() -> int:
    failed = []
    quick = sys.argv[1:] == ["--quick"]
    for script in sorted(HERE.glob("*.py")):
        if script.name in {"run_all.py"} or script.name.startswith("_"):
            continue
        print(f"\n=== {script.name} ===", flush=True)
        args = QUICK.get(script.name, ["--quick"]) if quick else sys.argv[1:]
        if subprocess.call([sys.executable, str(script), *args]) != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
