"""House rules of DESIGN.md that code can check: the core never imports torch."""
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "flmcore"
CORE = sorted(p.stem for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__", "cli"))


@pytest.mark.parametrize("module", CORE)
def test_core_module_does_not_import_torch(module):
    code = (f"import sys, flmcore.{module}; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"flmcore.{module} imports torch (or fails): {res.stderr[-2000:]}"


def test_kernels_do_not_import_torch():
    for p in (PKG / "_ext").glob("*.py"):
        text = p.read_text()
        assert "import torch" not in text and "from torch" not in text, p.name


def test_models_package_does_not_import_torch_until_used():
    """flmcore.models (shipped weights + the public names) stays torch-free at import; the torch
    implementation lives in flmcore.train and is loaded when a name is first used."""
    code = ("import sys, flmcore.models as m; assert 'torch' not in sys.modules; "
            "assert 'ibug68' in m.SHIPPED_MODELS and 'torch' in sys.modules")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def test_only_nn_train_and_cli_import_torch():
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG).as_posix()
        if rel.startswith(("nn/", "train/")) or rel == "cli.py":
            continue
        text = p.read_text()
        assert "import torch" not in text and "from torch" not in text, rel
