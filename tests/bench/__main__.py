"""Run every benchmark: ``python -m tests.bench [name …]`` (``make bench``).

Each ``tests/bench/bench_*.py`` module has a ``main()`` that measures keyturn next to
a reference measured in the same run and prints ratios, never bare absolute times.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import tests.bench as package


def main(argv: list[str]) -> int:
    wanted = set(argv)
    names = sorted(
        m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("bench_")
    )
    for name in names:
        if wanted and name not in wanted and name.removeprefix("bench_") not in wanted:
            continue
        print(f"\n=== {name} ===", flush=True)
        importlib.import_module(f"tests.bench.{name}").main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
