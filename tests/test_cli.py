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


# --- issue 14: a CLI a newcomer can use (clear messages, no tracebacks) ---------------------------
import os  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def test_version_flag(capsys):
    from flmcore import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out


def test_help_has_no_raw_rst():
    for argv in (["--help"], ["demo", "--help"], ["bench", "--help"], ["info", "--help"]):
        res = subprocess.run([sys.executable, "-m", "flmcore", *argv], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert "``" not in res.stdout and ":func:" not in res.stdout, res.stdout


def test_bench_unknown_name_is_a_clear_error(capsys):
    from flmcore.cli import _bench_names

    if not _bench_names():
        pytest.skip("bench/ not in this install")
    assert main(["bench", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark" in err and "lddmm" in err and "Traceback" not in err


def test_bench_help_lists_names():
    from flmcore.cli import _bench_names

    names = _bench_names()
    if not names:
        pytest.skip("bench/ not in this install")
    help_text = build_parser()._subparsers._group_actions[0].choices["bench"].format_help()
    for n in names:
        assert n in help_text


def test_demo_help_lists_every_part():
    from flmcore.train.demos import NEEDS, PARTS

    help_text = build_parser()._subparsers._group_actions[0].choices["demo"].format_help()
    for p in PARTS:
        assert p in help_text and p in NEEDS


def test_info_reports_torch_threads_under_omp1():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "flmcore", "info"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert "torch threads 1;" in res.stdout, res.stdout


def test_demo_without_sample_gives_clear_message(tmp_path, monkeypatch, capsys):
    """A wheel install has no sample: one short message, exit 3, no traceback."""
    import flmcore.data as data

    monkeypatch.delenv("FLMCORE_DATA", raising=False)
    monkeypatch.setattr(data, "sample_dir", lambda: tmp_path / "nowhere")
    rc = main(["demo", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 3
    assert "no data to run on" in err and "--data DIR" in err and "Traceback" not in err
    assert len(err.splitlines()) <= 5


def test_demo_data_dir_feeds_load_sample(tmp_path, monkeypatch, capsys):
    """``--data DIR`` with ``DIR/helen_pairs.npz``: parts read it; a part whose files DIR lacks is
    not run, says so in the report and makes the command exit 3 (never the bundled sample)."""
    np.savez(tmp_path / "helen_pairs.npz", shapes68=np.zeros((3, 68, 2)))
    seen = {}

    def run(ctx):
        from flmcore.data import load_sample

        seen["shape"] = load_sample("helen_pairs")["shapes68"].shape
        seen["ctx"] = ctx.load("helen_pairs")["shapes68"].shape
        seen["source"] = ctx.source("helen_pairs")
        return "## fake\n\nok"

    fake = types.ModuleType("flmcore.train.demos.ssr")
    fake.run = run
    monkeypatch.setitem(sys.modules, "flmcore.train.demos.ssr", fake)
    out = tmp_path / "out"
    rc = main(["demo", "--out", str(out), "--no-progress", "--data", str(tmp_path), "ssr", "geometry"])
    captured = capsys.readouterr()
    assert rc == 3, captured.err
    assert seen["shape"] == seen["ctx"] == (3, 68, 2)
    assert str(tmp_path) in seen["source"]
    assert "skipping part geometry" in captured.err and "helen68_shapes.npz" in captured.err
    report = (out / "report.md").read_text()
    assert "fake" in report
    assert "## geometry\n\nNot run:" in report and "never substitutes the bundled sample" in report


def test_demo_plan_accepts_ibug_folder_for_pipnet_and_lddmm(tmp_path):
    from flmcore.train.demos import PARTS, load_part, plan

    (tmp_path / "a.pts").write_text("version: 1\nn_points: 68\n{\n" + "1 1\n" * 68 + "}\n")
    runnable, reasons = plan(PARTS, tmp_path)
    assert runnable == ["lddmm", "pipnet"]
    assert set(reasons) == {"geometry", "ssr", "cascade", "atf"}
    assert all(str(tmp_path) in r for r in reasons.values())
    with pytest.raises(FileNotFoundError, match="helen_pairs.npz"):
        load_part("helen_pairs", tmp_path)  # no fallback to the bundled sample


def test_demo_skipped_parts_exit_nonzero_with_report(tmp_path, monkeypatch, capsys):
    """An iBUG folder: pipnet runs on it; the parts that need npz files are reported as not run."""
    (tmp_path / "a.pts").write_text("version: 1\nn_points: 68\n{\n" + "1 1\n" * 68 + "}\n")
    seen = {}

    def run(ctx):
        seen["data_dir"] = ctx.data_dir
        return "## fake pipnet\n\nok"

    fake = types.ModuleType("flmcore.train.demos.pipnet")
    fake.run = run
    monkeypatch.setitem(sys.modules, "flmcore.train.demos.pipnet", fake)
    out = tmp_path / "out"
    rc = main(["demo", "--out", str(out), "--no-progress", "--data", str(tmp_path), "pipnet", "ssr"])
    err = capsys.readouterr().err
    assert rc == 3 and "skipping part ssr" in err and "parts not run for lack of data: ssr" in err
    assert seen["data_dir"] == tmp_path.resolve()
    report = (out / "report.md").read_text()
    assert "fake pipnet" in report and "## ssr\n\nNot run:" in report and "parts not run: ssr" in report


def test_demo_part_failure_is_one_line(tmp_path, monkeypatch, capsys):
    np.savez(tmp_path / "helen_pairs.npz", shapes68=np.zeros((3, 68, 2)))
    fake = types.ModuleType("flmcore.train.demos.ssr")

    def run(ctx):
        raise RuntimeError("boom")

    fake.run = run
    monkeypatch.setitem(sys.modules, "flmcore.train.demos.ssr", fake)
    monkeypatch.delenv("FLMCORE_DEBUG", raising=False)
    rc = main(["demo", "--out", str(tmp_path / "out"), "--no-progress", "--data", str(tmp_path), "ssr"])
    err = capsys.readouterr().err
    assert rc == 1 and "part ssr failed: RuntimeError: boom" in err and "Traceback" not in err
