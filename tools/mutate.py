#!/usr/bin/env python
"""Mutation testing for one flmcore module: do its tests notice small deliberate bugs?

Each *mutant* is the module with exactly one small change made on its syntax tree:

* arithmetic operator swaps (``+`` <-> ``-``, ``*`` <-> ``/``, ``//`` -> ``/``, ``**`` -> ``*``,
  ``%`` -> ``*``, also in augmented assignments ``+=`` ...),
* comparison flips (``<`` <-> ``<=``, ``>`` <-> ``>=``, ``==`` <-> ``!=``, ``is`` <-> ``is not``,
  ``in`` <-> ``not in``),
* boolean operator swaps (``and`` <-> ``or``) and dropped ``not``,
* numeric constant tweaks (``0`` -> ``1``, ``1`` -> ``0``/``2``, ``n`` -> ``n + 1``,
  ``x`` -> ``x * 1.5`` for floats), unary minus dropped.

Docstrings, strings, f-strings (error messages) and ``raise`` statements' messages are never
mutated.  For every mutant the module is written into a *private copy* of the repository (the
working tree is never touched; other processes keep importing the real code) and the module's
tests run there with a timeout.  A mutant is *killed* when the tests fail (or time out), and
*survives* when they pass.  Surviving mutants are listed with their line so that a developer
can either add a test or mark them equivalent (no observable change) in ``--equivalent``.

Usage (from the repository root; runs are long, so be nice on a shared machine)::

    OMP_NUM_THREADS=1 nice -n 10 python tools/mutate.py flmcore/procrustes.py
    python tools/mutate.py flmcore/pip.py --tests tests/test_pip.py --max-mutants 60 --json out.json
    python tools/mutate.py flmcore/procrustes.py --list          # only list the mutants
    python tools/mutate.py flmcore/pip.py --indices 3 13 31      # re-test the survivors of a run

The score is ``killed / (total - equivalent)``.  The page ``docs/developer.rst`` records the
scores of the core modules.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]

#: Default tests per module (paths relative to the repository root).
DEFAULT_TESTS: Dict[str, List[str]] = {
    "flmcore/procrustes.py": ["tests/test_procrustes.py", "tests/test_fuzz_kernels.py"],
    "flmcore/anisotropic.py": ["tests/test_anisotropic_reference.py", "tests/test_anisotropic.py"],
    "flmcore/metrics.py": ["tests/test_metrics_reference.py", "tests/test_metrics.py"],
    "flmcore/ssr.py": ["tests/test_ssr_reference.py", "tests/test_ssr.py", "tests/test_ssr_estimators.py"],
    "flmcore/pip.py": ["tests/test_pip.py"],
    "flmcore/lddmm.py": ["tests/test_lddmm_reference.py", "tests/test_lddmm.py", "tests/test_fuzz_kernels.py"],
    "flmcore/nn/_losses.py": ["tests/test_losses_reference.py", "tests/test_losses.py"],
    "flmcore/nn/_pip.py": ["tests/test_pip_nn_reference.py", "tests/test_pip.py"],
    "flmcore/nn/_lddmm.py": ["tests/test_lddmm_reference.py", "tests/test_lddmm_nn.py", "tests/test_fidelity.py",
                             "tests/test_train_lddmm.py"],
    "flmcore/_ext/lars.py": ["tests/test_ssr.py", "tests/test_ssr_reference.py"],
}

_BINOP_SWAPS = {
    ast.Add: [ast.Sub], ast.Sub: [ast.Add], ast.Mult: [ast.Div], ast.Div: [ast.Mult],
    ast.FloorDiv: [ast.Div], ast.Pow: [ast.Mult], ast.Mod: [ast.Mult], ast.MatMult: [],
    ast.BitAnd: [ast.BitOr], ast.BitOr: [ast.BitAnd], ast.LShift: [ast.RShift], ast.RShift: [ast.LShift],
}
_CMP_SWAPS = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In,
}


@dataclass
class Mutant:
    index: int          # position in the enumeration (stable for a given source)
    line: int
    kind: str           # e.g. "Add->Sub", "Lt->LtE", "const 1->0"
    source_line: str
    status: str = "pending"   # killed / survived / timeout / error
    seconds: float = 0.0


def _skip_nodes(tree: ast.AST) -> set:
    """ids of nodes that are never mutated: docstrings, f-strings, raise statements, type annotations."""
    skip = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            skip.update(id(n) for n in ast.walk(body[0]))
        if isinstance(node, (ast.JoinedStr, ast.Raise, ast.Assert)):
            skip.update(id(n) for n in ast.walk(node))
        for ann in ("annotation", "returns"):
            a = getattr(node, ann, None)
            if isinstance(a, ast.AST):
                skip.update(id(n) for n in ast.walk(a))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("warn",):
            skip.update(id(n) for n in ast.walk(node))
    return skip


def _const_variants(v) -> List:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return []
    if isinstance(v, int):
        return {0: [1], 1: [0, 2]}.get(v, [v + 1])
    if v == 0.0:
        return [1.0]
    return [v * 1.5]


def enumerate_mutations(tree: ast.AST):
    """Yield ``(node_path_index, kind, apply)`` for every mutation point, in a stable order.

    ``apply(node)`` mutates a (deep-copied) node in place.
    """
    skip = _skip_nodes(tree)
    out = []
    for i, node in enumerate(ast.walk(tree)):
        if id(node) in skip:
            continue
        if isinstance(node, (ast.BinOp, ast.AugAssign)):
            for new in _BINOP_SWAPS.get(type(node.op), []):
                out.append((i, f"{type(node.op).__name__}->{new.__name__}", ("op", new)))
        elif isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                new = _CMP_SWAPS.get(type(op))
                if new is not None:
                    out.append((i, f"{type(op).__name__}->{new.__name__}", ("cmp", k, new)))
        elif isinstance(node, ast.BoolOp):
            new = ast.Or if isinstance(node.op, ast.And) else ast.And
            out.append((i, f"{type(node.op).__name__}->{new.__name__}", ("op", new)))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            out.append((i, f"drop {type(node.op).__name__}", ("unary",)))
        elif isinstance(node, ast.Constant):
            for v in _const_variants(node.value):
                out.append((i, f"const {node.value!r}->{v!r}", ("const", v)))
    return out


def _apply(tree: ast.AST, index: int, action) -> ast.AST:
    t = copy.deepcopy(tree)
    parents = {}
    nodes = list(ast.walk(t))
    for n in nodes:
        for c in ast.iter_child_nodes(n):
            parents[id(c)] = n
    node = nodes[index]
    if action[0] == "op":
        node.op = action[1]()
    elif action[0] == "cmp":
        node.ops[action[1]] = action[2]()
    elif action[0] == "const":
        node.value = action[1]
    elif action[0] == "unary":
        parent = parents[id(node)]
        for field, value in ast.iter_fields(parent):
            if value is node:
                setattr(parent, field, node.operand)
            elif isinstance(value, list):
                for k, v in enumerate(value):
                    if v is node:
                        value[k] = node.operand
    return ast.fix_missing_locations(t)


def _node_line(tree: ast.AST, index: int) -> int:
    for i, n in enumerate(ast.walk(tree)):
        if i == index:
            return getattr(n, "lineno", 0)
    return 0


def _copy_repo(dst: Path) -> None:
    ignore = shutil.ignore_patterns(".git", ".venv*", "build", "__pycache__", "*.c", "docs", "bench", "data")
    for name in ("flmcore", "tests", "pyproject.toml", "setup.py"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=ignore if name == "tests" else
                            shutil.ignore_patterns("__pycache__", "*.c", "build"), symlinks=True)
        elif src.exists():
            shutil.copy2(src, dst / name)


def _run_tests(work: Path, tests: Sequence[str], timeout: float) -> (str, float):
    env = dict(os.environ, PYTHONPATH=str(work), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONDONTWRITEBYTECODE="1", FLMCORE_SHARED_DATA=str(REPO.parent / "shared" / "data"),
               FLMCORE_DATA=str(REPO / "flmcore" / "data" / "sample"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=",
           "-W", "ignore::DeprecationWarning", *tests]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0
    dt = time.perf_counter() - t0
    if r.returncode == 0:
        return "survived", dt
    if r.returncode in (1, 2) or r.returncode < 0:
        return "killed", dt
    return f"error(rc={r.returncode})", dt


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("module", help="module path relative to the repository root, e.g. flmcore/procrustes.py")
    ap.add_argument("--tests", nargs="+",
                    help="test files or pytest node ids (default: the module's entry in DEFAULT_TESTS)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per mutant (default: 3 x the unmutated run + 30)")
    ap.add_argument("--max-mutants", type=int, default=None,
                    help="test a deterministic random sample of this many mutants")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only-lines", default=None, help="restrict to a line range a-b")
    ap.add_argument("--indices", nargs="*", type=int, default=None,
                    help="only these mutant indices (e.g. re-test the survivors after adding tests)")
    ap.add_argument("--equivalent", nargs="*", default=[], type=int,
                    help="mutant indices judged equivalent (excluded from the score)")
    ap.add_argument("--json", default=None, help="write the per-mutant results here")
    ap.add_argument("--list", action="store_true", help="only list the mutants")
    ap.add_argument("--no-clean-run", action="store_true",
                    help="skip the unmutated baseline run (the tests are known to pass; needs --timeout)")
    args = ap.parse_args(argv)

    rel = Path(args.module).as_posix()
    src_path = REPO / rel
    source = src_path.read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    muts = enumerate_mutations(tree)
    items = []
    for k, (idx, kind, action) in enumerate(muts):
        ln = _node_line(tree, idx)
        items.append((Mutant(k, ln, kind, lines[ln - 1].strip() if ln else ""), idx, action))
    if args.only_lines:
        a, b = (int(v) for v in args.only_lines.split("-"))
        items = [it for it in items if a <= it[0].line <= b]
    if args.indices is not None:
        items = [it for it in items if it[0].index in set(args.indices)]
    if args.max_mutants is not None and len(items) > args.max_mutants:
        items = sorted(random.Random(args.seed).sample(items, args.max_mutants), key=lambda it: it[0].index)
    if args.list:
        for m, _, _ in items:
            print(f"#{m.index:4d} line {m.line:4d} {m.kind:18s} {m.source_line[:90]}")
        print(f"{len(items)} mutants of {len(muts)}")
        return 0
    tests = args.tests or DEFAULT_TESTS.get(rel)
    if not tests:
        ap.error(f"no default tests for {rel}; pass --tests")
    tests = [t for t in tests if (REPO / t.split("::")[0]).exists()]   # files or pytest node ids

    with tempfile.TemporaryDirectory(prefix="flm-mutate-") as tmp:
        work = Path(tmp)
        _copy_repo(work)
        target = work / rel
        if args.no_clean_run:
            if args.timeout is None:
                ap.error("--no-clean-run needs --timeout")
            base = float("nan")
        else:
            status, base = _run_tests(work, tests, timeout=3600)
            if status != "survived":
                print(f"the unmutated tests fail ({status}); fix them first", file=sys.stderr)
                return 2
        timeout = args.timeout or 3 * base + 30
        print(f"{rel}: {len(items)} mutants, tests {' '.join(tests)} (clean run {base:.1f} s, timeout {timeout:.0f} s)",
              flush=True)
        try:
            for m, idx, action in items:
                mutated = ast.unparse(_apply(tree, idx, action))
                target.write_text(mutated)
                for pyc in target.parent.glob("__pycache__/*"):
                    pyc.unlink()
                m.status, m.seconds = _run_tests(work, tests, timeout)
                if m.status == "timeout":
                    m.status = "killed"  # a mutant that hangs the tests is detected
                print(f"#{m.index:4d} line {m.line:4d} {m.kind:18s} {m.status:9s} {m.seconds:6.1f}s  "
                      f"{m.source_line[:70]}", flush=True)
        finally:
            target.write_text(source)
    done = [m for m, _, _ in items]
    eq = set(args.equivalent)
    counted = [m for m in done if m.index not in eq]
    killed = sum(m.status == "killed" for m in counted)
    score = killed / len(counted) if counted else float("nan")
    print(f"\n{rel}: killed {killed} / {len(counted)} non-equivalent mutants = {100 * score:.1f} %"
          + (f" ({len(eq)} marked equivalent)" if eq else ""))
    surv = [m for m in counted if m.status != "killed"]
    if surv:
        print("surviving mutants:")
        for m in surv:
            print(f"  #{m.index} line {m.line}: {m.kind}  {m.source_line[:90]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"module": rel, "tests": tests, "score": score, "killed": killed,
                                               "counted": len(counted), "mutants": [asdict(m) for m in done]},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
