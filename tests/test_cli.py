"""The console script: info reports compiled kernels, demo writes a report."""
import subprocess
import sys

from flmcore.cli import build_parser, main


def test_info_reports_compiled_kernels(capsys):
    rc = main(["info"])
    out = capsys.readouterr().out
    assert "flmcore" in out and "numpy" in out
    assert "compiled kernel flmcore._ext." in out
    assert rc == 0, out  # every Cython kernel must be built by the install


def test_demo_rejects_unknown_part(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--no-progress", "nosuchpart"]) == 2
    assert "unknown part" in capsys.readouterr().err


def test_demo_rejects_missing_data_dir(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path), "--no-progress", "--data", str(tmp_path / "nope")])
    assert rc == 2


def test_parser_has_three_commands():
    ap = build_parser()
    for cmd in ("demo", "bench", "info"):
        assert ap.parse_args([cmd]).command == cmd


def test_module_entry_point_runs():
    res = subprocess.run([sys.executable, "-m", "flmcore", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "demo" in res.stdout
