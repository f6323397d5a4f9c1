"""Issue 15, CLI probes in-process through ``iqabench.cli.main`` (the real error boundary): each bad input is
one sentence with exit code 2, a bug keeps its traceback, an incomplete run exits 3."""

import errno
import pathlib
import textwrap

import pytest

from iqabench.cli import main

RUN = ["run", "scores", "-g", "tiny-sd[steps=1]", "--metrics", "entropy", "--limit", "1"]


def cli(args, capsys):
    """(exit code, stderr as one line, stdout) of ``iqabench *args``."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    code = info.value.code if isinstance(info.value.code, int) else (0 if info.value.code is None else 1)
    return code, " ".join(captured.err.split()), " ".join(captured.out.split())


def one_error(err: str) -> str:
    assert err.count("error:") == 1 and "Traceback" not in err, err
    return err[err.index("error:") + len("error:"):].strip()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from iqabench.api import run
    from iqabench.contracts.specs import RunSpec

    root = tmp_path_factory.mktemp("finished")
    outcome = run(RunSpec("scores", ["tiny-sd[steps=1]"], metrics=["entropy"], limit=1), out=root)
    return root, outcome.run_id


# -- group 6: --out and report -o ------------------------------------------------------------------
def test_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    code, err, _ = cli([*RUN, "--out", target, "--dry-run"], capsys)
    assert code == 2
    assert one_error(err) == (f"the store folder {target} exists but is not a folder; pass --out a folder "
                              "(new or existing)")
    assert target.read_text() == "x"


def test_out_under_a_file(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    code, err, _ = cli([*RUN, "--out", target / "store", "--dry-run"], capsys)
    assert code == 2
    assert one_error(err) == (f"the store folder {target / 'store'} cannot be created: {target} is a file, "
                              "not a folder")


def test_out_dev_null(capsys):
    code, err, _ = cli([*RUN, "--out", "/dev/null", "--dry-run"], capsys)
    assert code == 2 and one_error(err).startswith("the store folder /dev/null exists but is not a folder")


def test_out_read_only(tmp_path, capsys, monkeypatch):
    """Fault injection (the suite may run as root, who can write anywhere): mkdir meets a read-only mount."""
    real_mkdir = pathlib.Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    code, err, _ = cli([*RUN, "--out", tmp_path / "ro", "--dry-run"], capsys)
    assert code == 2
    assert one_error(err) == (f"{tmp_path / 'ro' / 'cache' / 'images'}: Read-only file system (the file system "
                              "is read-only: pick a writable --out folder)")


def test_report_output_directory_gets_report_html(finished, tmp_path, capsys):
    root, run_id = finished
    folder = tmp_path / "reports"
    folder.mkdir()
    code, err, out = cli(["report", run_id, "--out", root, "-o", folder], capsys)
    assert code == 0 and (folder / "report.html").is_file()
    assert f"report: {folder / 'report.html'}" in out


def test_disk_full_is_one_sentence_and_keeps_finished_work(tmp_path, capsys, monkeypatch):
    from iqabench.store import store as store_module

    real = store_module.atomic_write_bytes
    written = []

    def fills_up(path, data):
        if path.suffix == ".png" and written:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)
        if path.suffix == ".png":
            written.append(path)

    monkeypatch.setattr(store_module, "atomic_write_bytes", fills_up)
    args = ["run", "scores", "-g", "tiny-sd[steps=1]", "--metrics", "entropy", "--limit", "2", "--batch-size", "1",
            "--out", tmp_path]
    code, err, _ = cli(args, capsys)
    assert code == 2
    message = one_error(err)
    assert message.endswith(": No space left on device (the disk is full: free some space (or point --out at "
                            "another disk) and re-run; finished images and scores are kept)")
    pngs = list((tmp_path / "cache" / "images").glob("*/*.png"))
    assert len(pngs) == 1 and not list(tmp_path.glob("**/.*.tmp"))  # the finished image is whole, no leftovers
    monkeypatch.setattr(store_module, "atomic_write_bytes", real)
    code, err, _ = cli(args, capsys)  # space freed: the re-run makes only the missing image
    assert code == 0 and "2 unique images: 1 cached, 1 to generate" in err


# -- group 6: device, plugins ------------------------------------------------------------------------
def test_device_tpu(tmp_path, capsys):
    code, err, _ = cli([*RUN, "--device", "tpu", "--out", tmp_path, "--dry-run"], capsys)
    assert code == 2 and one_error(err) == "unknown device 'tpu': choose cuda, cuda:N, mps, cpu or auto"


def test_plugin_raising_at_import(tmp_path, capsys):
    plugin = tmp_path / "raises.py"
    plugin.write_text("import math\n\nRATIO = 1 / math.floor(0.5)\n")
    code, err, _ = cli(["list", "metrics", "--plugin", plugin], capsys)
    assert code == 2
    assert one_error(err) == (f"plugin '{plugin}' failed while being imported at line 3 of {plugin} "
                              f"(ZeroDivisionError: division by zero); fix it or leave out --plugin {plugin}")


def test_plugin_bug_keeps_its_traceback(tmp_path, capsys):
    """A ValueError raised by pandas inside a plugin is a bug to debug, not "error: All arrays must be ..."."""
    plugin = tmp_path / "buggy_bench.py"
    plugin.write_text(textwrap.dedent('''
        import pandas as pd
        from iqabench.benchmark import BaseBenchmark, register_benchmark

        @register_benchmark("buggy-test", overwrite=True)
        class Buggy(BaseBenchmark):
            options = {}

            def plan(self, spec):
                pd.DataFrame({"a": [1], "b": [1, 2]})
    '''))
    code, err, _ = cli(["run", "buggy-test", "-g", "tiny-sd", "--plugin", plugin, "--out", tmp_path, "--dry-run"],
                       capsys)
    assert code == 1 and "Traceback" in err and "All arrays must be of the same length" in err
    assert "this is a bug in iqabench, please report it" in err


# -- groups 4, 7, 8: bad values -------------------------------------------------------------------------
def test_option_nan_is_one_sentence(tmp_path, capsys):
    code, err, _ = cli(["run", "seed-consistency", "-g", "tiny-sd", "--option", "near_zero=NaN", "--out", tmp_path,
                        "--dry-run"], capsys)
    assert code == 2
    assert one_error(err) == "option 'near_zero' is 'NaN': NaN and Infinity are not allowed, give a finite number"


def test_duplicate_option_and_spec_key(tmp_path, capsys):
    code, err, _ = cli([*RUN, "--option", "prompt_column=a", "--option", "prompt_column=b", "--out", tmp_path,
                        "--dry-run"], capsys)
    assert code == 2 and one_error(err) == "--option 'prompt_column' is given twice; keep one"
    code, err, _ = cli(["run", "scores", "-g", "tiny-sd[steps=2,steps=3]", "--out", tmp_path, "--dry-run"], capsys)
    assert code == 2 and one_error(err) == ("option 'steps' is given twice in spec 'tiny-sd[steps=2,steps=3]'; "
                                            "keep one")


def test_huge_seed_range_is_one_sentence(tmp_path, capsys):
    code, err, _ = cli([*RUN, "--seeds", "0-100000000", "--out", tmp_path, "--dry-run"], capsys)
    assert code == 2 and one_error(err).startswith("100,000,001 seeds asked for, more than the limit of 10,000")


def test_unknown_option_cli(tmp_path, capsys):
    code, err, _ = cli(["run", "fid-topk", "-g", "tiny-sd", "--option", "topK=10", "--out", tmp_path, "--dry-run"],
                       capsys)
    assert code == 2 and "benchmark 'fid-topk' has no option 'topK'. Did you mean 'topk'?" in one_error(err)


def test_list_benchmarks_options(capsys):
    code, _, text = cli(["list", "benchmarks", "--options"], capsys)
    assert code == 0
    assert "scale-sweep │ scales" in text and "fid-topk │ reference" in text and "relgain │ (none)" in text
    assert "(every benchmark) │ prompt_column" in text


# -- group 5: exit codes ---------------------------------------------------------------------------------
def test_all_images_failing_exits_3_with_a_retry_hint(tmp_path, capsys):
    plugin = tmp_path / "black.py"
    plugin.write_text(textwrap.dedent('''
        from PIL import Image
        from iqabench.contracts.generators import register_generator
        from iqabench.adapters.diffusers_base import DiffusersGenerator
        from iqabench.support.tiny_models import tiny_sd_pipeline

        class Black(DiffusersGenerator):
            def generate(self, items):
                return [Image.new("RGB", (64, 64)) for _ in items]

        @register_generator("black-cli-test", overwrite=True)
        def build(spec, runtime):
            return Black(spec, runtime, source="tiny-sd", defaults={"steps": 1}, tiny_builder=tiny_sd_pipeline)
    '''))
    args = ["run", "scores", "-g", "black-cli-test", "--metrics", "entropy", "--limit", "1", "--plugin", plugin,
            "--out", tmp_path / "out"]
    code, err, out = cli(args, capsys)
    assert code == 3
    assert ("run incomplete: 1 of 1 image(s) failed to generate; 1 of 1 score(s) are missing or failed "
            "(entropy: 1); the report's failures table says why. Re-run the same command to retry only what "
            "failed, or pass --allow-failures to accept a partial run.") in err
    assert "report:" in out  # the partial report is still written
    code, err, _ = cli([*args, "--allow-failures"], capsys)
    assert code == 0 and "run incomplete" in err


def test_complete_run_exits_0(tmp_path, capsys):
    code, err, out = cli([*RUN, "--out", tmp_path], capsys)
    assert code == 0 and "run incomplete" not in err and "report:" in out


# -- group 1: store verify ------------------------------------------------------------------------------
def test_store_verify_and_repair_exit_codes(finished, tmp_path, capsys):
    import shutil

    root = tmp_path / "s"
    shutil.copytree(finished[0], root)
    png = next((root / "cache" / "images").glob("*/*.png"))
    png.write_bytes(png.read_bytes()[:40])
    code, _, out = cli(["store", "verify", "--out", root], capsys)
    assert code == 3 and f"damaged image {png.stem} has 40 bytes" in out and png.exists()
    code, _, out = cli(["store", "verify", "--repair", "--out", root], capsys)
    assert code == 0 and "moved to cache/quarantine/" in out and not png.exists()
    code, _, out = cli(["store", "verify", "--out", root], capsys)
    assert code == 0 and "no damage found" in out
    code, err, _ = cli(["store", "verify", "--out", tmp_path / "nothing"], capsys)
    assert code == 2 and one_error(err) == f"no store at {tmp_path / 'nothing'}: pass --out the folder a run wrote"


def test_damaged_score_database_is_one_sentence(tmp_path, capsys):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "scores.sqlite").write_bytes(b"not a database at all" * 100)
    code, err, _ = cli([*RUN, "--out", tmp_path, "--dry-run"], capsys)
    assert code == 2
    assert one_error(err) == ("the score database failed: file is not a database (cache/scores.sqlite is damaged: "
                              "move it aside and re-run to recompute the scores (cached images are kept))")


def test_report_under_a_file_names_the_file(finished, tmp_path, capsys):
    root, run_id = finished
    a_file = tmp_path / "report.html"
    a_file.write_text("kept")
    code, err, _ = cli(["report", run_id, "--out", root, "-o", a_file / "x.html"], capsys)
    assert code == 2
    assert one_error(err) == f"{a_file / 'x.html'} cannot be written: {a_file} is a file, not a folder"
    assert a_file.read_text() == "kept"


def test_report_to_dev_null_never_replaces_the_device(finished, capsys):
    """As root, a rename over /dev/null would swap the device for a regular file."""
    root, run_id = finished
    code, err, _ = cli(["report", run_id, "--out", root, "-o", "/dev/null"], capsys)
    assert code == 2
    assert one_error(err) == ("/dev/null is not a regular file (a device, pipe or socket); iqabench only writes "
                              "regular files there: give a file path")
    assert pathlib.Path("/dev/null").is_char_device()


def test_empty_metrics_is_refused_not_replaced_by_the_defaults(tmp_path, capsys):
    code, err, _ = cli(["run", "relgain", "-g", "tiny-sd", "--metrics", "", "--out", tmp_path, "--dry-run"], capsys)
    assert code == 2 and one_error(err) == "no metrics given: pass e.g. --metrics piqe,entropy"
