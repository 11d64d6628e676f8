"""Issue 22: the layering of reproduce/ holds, checked by import-linter's
contracts in pyproject.toml (every import counts, those inside functions too):
no cycle, a node side that imports nothing of the driver, the tracking
sub-package alone importing mlflow or sqlalchemy, the backends alone
importing submitit. And no code outside the backends decides by a backend's
name."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reproduce"


def test_import_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "5 kept, 0 broken" in out.stdout, out.stdout[-2000:]


def test_a_broken_contract_is_caught(tmp_path):
    """The check can fail: a node module importing the planner breaks the node-side contract."""
    import shutil
    copy = tmp_path / "repo"
    shutil.copytree(PACKAGE, copy / "reproduce", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    (copy / "reproduce" / "node" / "weights.py").open("a").write("\nfrom reproduce.sweep import plan  # noqa\n")
    lint = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint), "--no-cache"], cwd=copy, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert out.returncode != 0
    assert "reproduce.node.weights -> reproduce.sweep.plan" in out.stdout, out.stdout[-3000:]


def _backend_names() -> set[str]:
    from reproduce.backends import BACKENDS
    return set(BACKENDS)


def test_no_code_outside_the_backends_compares_a_backend_name():
    """A backend's name is data (a job record carries it); only reproduce/backends/ turns it into behaviour."""
    names, found = _backend_names(), []
    for path in PACKAGE.rglob("*.py"):
        if "backends" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                consts = [c.value for c in (node.left, *node.comparators) if isinstance(c, ast.Constant)]
                consts += [e.value for c in node.comparators if isinstance(c, (ast.Tuple, ast.Set, ast.List))
                           for e in c.elts if isinstance(e, ast.Constant)]
                if names & {c for c in consts if isinstance(c, str)}:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr in ("is_local", "backend") and isinstance(
                    node.ctx, ast.Load) and _in_condition(node, path):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} ({node.attr})")
    assert not found, found


def _in_condition(node: ast.AST, path: Path) -> bool:
    """``node`` is read in an if/while/ternary test or a comparison (not shown in a message)."""
    tree = ast.parse(path.read_text())
    for parent in ast.walk(tree):
        tests = []
        if isinstance(parent, (ast.If, ast.While, ast.IfExp)):
            tests = [parent.test]
        elif isinstance(parent, ast.Compare):
            tests = [parent]
        elif isinstance(parent, ast.BoolOp):
            tests = parent.values
        for test in tests:
            for sub in ast.walk(test):
                if isinstance(sub, ast.Attribute) and sub.attr == node.attr and sub.lineno == node.lineno \
                        and sub.col_offset == node.col_offset:
                    return True
    return False


def test_phases_and_states_are_enums():
    """A job's phase and result, and a run's state, are enums: a misspelt word fails where it is written."""
    from reproduce.backends import JobState, Phase, Result
    from reproduce.sweep.status import State
    job = JobState("1", "SLURM job 1", "ended", result="success")
    assert job.phase is Phase.ENDED and job.result is Result.SUCCESS
    import pytest
    with pytest.raises(ValueError):
        JobState("1", "SLURM job 1", "endd")
    assert all(isinstance(s, State) for s in State)
