"""A resume of a finished run does no work it need not (issue 29): same inputs, no analysis, nothing rewritten."""

from iqabench import RunSpec, run
from iqabench.engine.runner import Runner

SPEC = dict(benchmark="scores", generators=["tiny-sd"], metrics=["entropy"], prompts="smoke", limit=2, seeds=[0])


def _mtimes(folder):
    return {p.relative_to(folder): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and p.name not in ("run.json", "heartbeat", ".lock")}


def test_resume_of_a_finished_run_rewrites_no_result_or_report_and_does_not_analyse(tmp_path, monkeypatch):
    first = run(RunSpec(**SPEC), out=tmp_path)
    assert first.complete and first.report.is_file()
    before = _mtimes(first.run_dir)
    assert any(str(p).endswith("report.html") for p in before) and len(before) > 3

    def refuse(self):
        raise AssertionError("a finished run with unchanged inputs was analysed again")

    monkeypatch.setattr(Runner, "analyze", refuse)
    again = run(RunSpec(**SPEC), out=tmp_path)
    assert again.unchanged and again.complete
    assert again.report == first.report and again.result is not None and again.result.tables
    assert _mtimes(first.run_dir) == before  # tables, figures, result.json and report.html untouched
    manifest = again.run_dir / "run.json"
    import json

    data = json.loads(manifest.read_text())
    assert data["status"] == "complete" and data["analysis_inputs"] == again.analysis_inputs


def test_a_changed_score_or_a_missing_report_makes_the_resume_analyse_again(tmp_path, monkeypatch):
    from iqabench.store.store import Store

    first = run(RunSpec(**SPEC), out=tmp_path)
    store = Store(tmp_path)
    with store._transaction() as db:
        db.execute("UPDATE scores SET value = value + 1 WHERE metric = 'entropy'")
    store.close()
    calls = []
    original = Runner.analyze
    monkeypatch.setattr(Runner, "analyze", lambda self: calls.append(1) or original(self))
    again = run(RunSpec(**SPEC), out=tmp_path)
    assert calls == [1] and not again.unchanged and again.analysis_inputs != first.analysis_inputs
    again.report.unlink()
    third = run(RunSpec(**SPEC), out=tmp_path)
    assert calls == [1, 1] and not third.unchanged and third.report.is_file()


def test_a_run_start_reads_run_json_once_and_again_only_when_it_changed(tmp_path, monkeypatch):
    """The spec check before planning, the one under the lock and the resume's comparison share one read."""
    from pathlib import Path

    from iqabench.store import run_folders

    first = run(RunSpec(**SPEC), out=tmp_path)
    reads = []
    original = run_folders.read_json_document
    monkeypatch.setattr(run_folders, "read_json_document",
                        lambda path, **kw: reads.append(Path(path).name) or original(path, **kw))
    again = run(RunSpec(**SPEC), out=tmp_path)
    assert again.unchanged and reads.count("run.json") == 1

    reads.clear()  # rewritten between the first check and the claim: read again, and the new spec is what counts
    runner = Runner(RunSpec(**SPEC), tmp_path)
    manifest = (first.run_dir / "run.json").read_text()
    (first.run_dir / "run.json").write_text(manifest.replace('"entropy"', '"piqe"'))
    from iqabench.engine.run_binding import RunIdInUseError

    try:
        runner.execute()
    except RunIdInUseError as exc:
        assert "differing: metrics" in str(exc)
    else:
        raise AssertionError("a run.json rewritten with another spec after the first check was not read again")
    assert reads.count("run.json") == 2


def _count_analyses(monkeypatch) -> list:
    calls = []
    original = Runner.analyze
    monkeypatch.setattr(Runner, "analyze", lambda self: calls.append(1) or original(self))
    return calls


def _change_scores(tmp_path) -> None:
    from iqabench.store.store import Store

    store = Store(tmp_path)
    with store._transaction() as db:
        db.execute("UPDATE scores SET value = value + 1 WHERE metric = 'entropy'")
    store.close()


def test_a_report_that_was_not_rendered_for_the_new_inputs_is_rendered_by_the_next_resume(tmp_path, monkeypatch):
    """Changed inputs analysed without a report (report=False), or with a render killed by a signal: the inputs
    are not recorded as reported, so the next resume analyses and renders again instead of keeping the old page."""
    import json

    import pytest

    from iqabench import reports

    first = run(RunSpec(**SPEC), out=tmp_path)
    old_page = first.report.read_text()
    calls = _count_analyses(monkeypatch)

    _change_scores(tmp_path)
    no_report = run(RunSpec(**SPEC), out=tmp_path, report=False)
    assert calls == [1] and not no_report.unchanged
    assert "analysis_inputs" not in json.loads((first.run_dir / "run.json").read_text())
    again = run(RunSpec(**SPEC), out=tmp_path)
    assert calls == [1, 1] and not again.unchanged and again.report.read_text() != old_page

    _change_scores(tmp_path)
    page = again.report.read_text()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what SIGTERM becomes while a run works

    with monkeypatch.context() as patch:
        patch.setattr(reports, "render_report", killed)
        with pytest.raises(KeyboardInterrupt):
            run(RunSpec(**SPEC), out=tmp_path)
    assert calls == [1, 1, 1] and again.report.read_text() == page  # the old page is still there
    third = run(RunSpec(**SPEC), out=tmp_path)
    assert calls == [1, 1, 1, 1] and not third.unchanged and third.report.read_text() != page


def test_an_upgraded_analysis_library_makes_the_resume_analyse_again_and_rewrite(tmp_path, monkeypatch):
    """A new scipy or pandas can change CIs and tables: the resume analyses again and rewrites the result."""
    from iqabench.engine import runner as runner_module

    first = run(RunSpec(**SPEC), out=tmp_path)
    result_file = first.run_dir / "results" / "result.json"
    before = result_file.stat().st_mtime_ns
    assert run(RunSpec(**SPEC), out=tmp_path).unchanged
    calls = _count_analyses(monkeypatch)
    installed = runner_module._analysis_library_versions()
    assert installed["numpy"] and installed["scipy"]  # read from the installed metadata
    monkeypatch.setattr(runner_module, "_analysis_library_versions", lambda: {**installed, "scipy": "999.0"})
    again = run(RunSpec(**SPEC), out=tmp_path)
    assert calls == [1] and not again.unchanged and result_file.stat().st_mtime_ns != before
