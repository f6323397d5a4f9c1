"""Issue 26, item 5: every reader of run folders validates JSON shape and size. A crafted or damaged run folder
is one row marked unreadable in `list runs` and one sentence naming the file in `report` (exit 2), never a
traceback of the whole listing; result tables that are malformed CSV likewise; the study kit's files too."""

import json

import pandas as pd
import pytest
from test_hardening_cli import cli, one_error

from iqabench.contracts.results import Result
from iqabench.reports import save_result
from iqabench.store.store import Store

DEEP = "[" * 100_000 + "]" * 100_000
BAD_RUN_JSON = {"a JSON list": "[1, 2]", "a JSON string": '"run"', "deeply nested": DEEP, "garbage": "\x00{nope",
                "spec is a list": '{"spec": [1], "status": "complete"}',
                "generators is a string": '{"spec": {"generators": "tiny-sd"}}',
                "nested past the cap": '{"spec": {"x": ' + "[" * 200 + "]" * 200 + "}}"}


def _good_run(store: Store, run_id: str) -> None:
    store.write_run_json(run_id, {"run_id": run_id, "benchmark": "scores", "status": "complete",
                                  "updated": "2026-01-01T10:00:00", "spec": {"benchmark": "scores",
                                                                             "generators": ["sd15"]}})
    save_result(store, run_id, Result("scores", tables={"scores": pd.DataFrame({"generator": ["sd15"],
                                                                                "piqe": [30.0]})}))


@pytest.mark.parametrize("case", list(BAD_RUN_JSON))
def test_list_runs_shows_a_bad_run_json_as_one_unreadable_row(tmp_path, capsys, case):
    store = Store(tmp_path / "s")
    _good_run(store, "good")
    (store.runs_dir / "bad").mkdir()
    (store.runs_dir / "bad" / "run.json").write_text(BAD_RUN_JSON[case])
    code, err, out = cli(["list", "runs", "--out", store.root], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert "good" in out and "complete" in out
    flat = out.replace(" ", "")
    assert "unreadable:run.json" in flat and flat.count("unreadable") == 1


@pytest.mark.parametrize("case", list(BAD_RUN_JSON))
def test_report_of_a_bad_run_json_is_one_sentence_naming_the_file(tmp_path, capsys, case):
    store = Store(tmp_path / "s")
    _good_run(store, "bad")
    (store.runs_dir / "bad" / "run.json").write_text(BAD_RUN_JSON[case])
    code, err, _ = cli(["report", "bad", "--out", store.root], capsys)
    assert code == 2 and "run.json" in one_error(err)


@pytest.mark.parametrize("content", ["[1, 2]", '"x"', DEEP, "garbage", '{"format": "iqabench-result/v1", '
                                     '"tables": "abc"}', '{"format": "iqabench-result/v1", "tables": [1]}',
                                     '{"format": "iqabench-result/v1", "grids": {"g": [{"image_key": "a", '
                                     '"scores": {"piqe": "high"}}]}}'])
def test_report_of_a_bad_result_json_is_one_sentence_naming_the_file(tmp_path, capsys, content):
    store = Store(tmp_path / "s")
    _good_run(store, "bad")
    (store.runs_dir / "bad" / "results" / "result.json").write_text(content)
    code, err, _ = cli(["report", "bad", "--out", store.root], capsys)
    assert code == 2 and "result.json" in one_error(err)


def test_huge_sparse_result_json_is_refused_by_its_size_at_once(tmp_path, capsys):
    import time

    store = Store(tmp_path / "s")
    _good_run(store, "bad")
    with open(store.runs_dir / "bad" / "results" / "result.json", "wb") as handle:
        handle.truncate(2**31)  # 2 GiB of zeros, sparse: on main, 45 s of reading then JSONDecodeError
    start = time.perf_counter()
    code, err, _ = cli(["report", "bad", "--out", store.root], capsys)
    assert code == 2 and "more than the 67,108,864 a run folder's file may hold" in one_error(err)
    assert time.perf_counter() - start < 10


def test_malformed_csv_table_is_one_sentence_naming_the_file(tmp_path, capsys):
    store = Store(tmp_path / "s")
    _good_run(store, "bad")
    (store.runs_dir / "bad" / "results" / "scores.csv").write_text('generator,piqe\nsd15,1\n"a,b,c\nx,y,z,w,v\n')
    code, err, _ = cli(["report", "bad", "--out", store.root], capsys)
    assert code == 2 and "scores.csv is not a readable CSV table" in one_error(err)


def test_depth_and_type_checks_of_the_reader(tmp_path):
    from iqabench.store.run_folders import RunFolderError, read_json_document

    path = tmp_path / "x.json"
    path.write_text(json.dumps({"a": {"b": [1]}}))
    assert read_json_document(path) == {"a": {"b": [1]}}
    with pytest.raises(RunFolderError, match="nested more than 2 levels"):
        read_json_document(path, max_depth=2)
    (tmp_path / "link.json").symlink_to(path)
    with pytest.raises(RunFolderError, match="not a regular file"):
        read_json_document(tmp_path / "link.json")


def test_study_votes_nested_too_deeply_are_one_sentence(tmp_path):
    from iqabench.benchmarks.study.analyze import load_votes
    from iqabench.store.run_folders import RunFolderError

    votes = tmp_path / "votes.json"
    votes.write_text(DEEP)
    with pytest.raises(RunFolderError, match="votes.json is nested too deeply"):
        load_votes([votes])
    votes.write_text('{"votes": "nope"}')
    with pytest.raises(ValueError, match="'votes' must be a list"):
        load_votes([votes])
