"""Which of ``reproduce/``'s modules one CLI command passes through, in order.

    python benchmarks/module_trace.py [--skip errors,schema] -- run one --profile ci --sweeps DIR --workdir DIR --no-wait
    python benchmarks/module_trace.py --tests-sweeps DIR   # writes the tests' tiny `ci` profile and one-row table

Every call into a function defined in ``reproduce/`` (its sub-packages too)
is recorded with its module, named by its dotted path below ``reproduce``
(``sweep.plan``; a sub-package's ``__init__`` by the sub-package's name);
consecutive calls in one module are one stop. Prints the stops, how
many modules they visit, how often the path comes back to a module it had
left, and how often it enters each module. A measure of how far a reader
must jump to follow a command, not of speed.
"""
from __future__ import annotations

import inspect
import sys
from collections import Counter
from pathlib import Path


def trace(argv: list[str], skip: frozenset[str] = frozenset()) -> list[str]:
    import reproduce
    package = Path(reproduce.__file__).resolve().parent  # the one on sys.path (PYTHONPATH=an older checkout works)
    stops: list[str] = []

    def profile(frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        path = Path(code.co_filename)
        # functions only: a module's or a class's body runs at import, which no reader follows
        if package not in path.parents or code.co_name.startswith("<") or not code.co_flags & inspect.CO_OPTIMIZED:
            return
        parts = path.relative_to(package).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module in skip or path.stem in skip:
            return
        if not stops or stops[-1] != module:
            stops.append(module)

    from reproduce.cli import main
    sys.setprofile(profile)
    try:
        main(argv)
    finally:
        sys.setprofile(None)
    return stops


def main() -> None:
    if sys.argv[1:2] == ["--tests-sweeps"]:  # the specs the tests use: their `ci` profile, a one-row table
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from conftest import make_sweeps
        print(make_sweeps(Path(sys.argv[2])))
        return
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    # --skip a,b: leave out modules a reader treats as vocabulary (errors, schema), not as stages
    skip = frozenset(sys.argv[sys.argv.index("--skip") + 1].split(",")) if "--skip" in sys.argv[:sys.argv.index("--")
                                                                                                  if "--" in sys.argv else None] else frozenset()
    stops = trace(argv, skip)
    print(" -> ".join(stops))
    print(summary(stops, "modules"))
    print("entered: " + ", ".join(f"{m} {n}" for m, n in Counter(stops).most_common()))
    # the same path one level up: a sub-package (sweep, backends, tracking, node, ...) as one place
    packages = [m.split(".")[0] for m in stops]
    print(summary([p for i, p in enumerate(packages) if i == 0 or packages[i - 1] != p], "sub-packages or modules"))


def summary(stops: list[str], unit: str) -> str:
    seen, returns = set(), 0
    for i, module in enumerate(stops):
        if module in seen and stops[i - 1] != module:
            returns += 1
        seen.add(module)
    return f"{len(stops)} stops in {len(seen)} {unit}, {returns} returns to one already left"


if __name__ == "__main__":
    main()
