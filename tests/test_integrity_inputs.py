"""Issue 26, items 5-6: bad inputs are one sentence before any work (exit 2), never a traceback, a hang or a
silent wrong result: CSV prompt files with an unbalanced quote or an oversized field, a FIFO as prompt file, deep
JSONL, --run-id "", --num-processes 0/-1, a seed range past what any run can plan, a plugin exiting at import,
and --limit lifting the prompt-count limit."""

import os
import threading

import pytest
from test_hardening_cli import RUN, cli, one_error

from iqabench.contracts.specs import SpecError, parse_seeds
from iqabench.io.prompts import PromptFileError, load_prompts


def test_csv_with_an_unterminated_quote_is_refused_with_its_line(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('prompt\na cat\n"a dog, running\na bird\na fish\n')
    with pytest.raises(PromptFileError, match=r"p.csv', line 3: a quote opened here is never closed"):
        load_prompts(str(path))  # on main: 2 prompts, the second swallowing the rest of the file


def test_csv_with_an_oversized_field_is_refused_with_its_line(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("prompt\na cat\n" + "x" * 200_000 + "\n")
    with pytest.raises(PromptFileError, match=r"p.csv', line 3: a field is longer than 131,072 characters"):
        load_prompts(str(path))  # on main: _csv.Error traceback


def test_a_quoted_multi_line_prompt_is_still_accepted(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('prompt\n"two\nlines"\nplain\n')
    assert [p.text for p in load_prompts(str(path))] == ["two\nlines", "plain"]


def test_fifo_as_prompt_file_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "prompts.txt"
    os.mkfifo(fifo)
    outcome = {}

    def read():
        try:
            load_prompts(str(fifo))
        except PromptFileError as exc:
            outcome["error"] = str(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # on main it waits for a writer forever; unblock it so the test process can end
        with open(fifo, "w"):
            pass
        pytest.fail("reading a FIFO as prompt file hung")
    assert "is not a regular file (a pipe, device or socket)" in outcome["error"]


def test_deeply_nested_jsonl_prompt_is_one_sentence(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a cat"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(PromptFileError, match=r"p.jsonl', line 2: not valid JSON \(nested too deeply\)"):
        load_prompts(str(path))


def test_limit_lifts_the_prompt_count_limit_as_documented(tmp_path, monkeypatch):
    path = tmp_path / "p.txt"
    path.write_text("".join(f"prompt {i}\n" for i in range(50)))
    monkeypatch.setenv("IQABENCH_MAX_PROMPTS", "40")
    assert [p.text for p in load_prompts(str(path), limit=2)] == ["prompt 0", "prompt 1"]
    with pytest.raises(PromptFileError, match="holds 50 prompts"):
        load_prompts(str(path))


def test_seed_range_past_any_run_is_refused_even_with_the_limit_raised(monkeypatch):
    monkeypatch.setenv("IQABENCH_MAX_SEEDS", "200000000")
    with pytest.raises(SpecError, match=r"IQABENCH_MAX_SEEDS=200000000 is above the most seeds one run can plan"):
        parse_seeds("0-100000000")  # on main: a list of 10**8 ints, then MemoryError while planning


def test_seed_range_past_any_run_cli_dry_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IQABENCH_MAX_SEEDS", "200000000")
    code, err, _ = cli([*RUN, "--seeds", "0-100000000", "--out", tmp_path, "--dry-run"], capsys)
    assert code == 2 and "above the most seeds one run can plan (100,000)" in one_error(err)


@pytest.mark.parametrize("run_id", ["", "../x", "a/b", ".hidden"])
def test_bad_run_id_is_refused(tmp_path, capsys, run_id):
    code, err, _ = cli([*RUN, "--run-id", run_id, "--out", tmp_path, "--dry-run"], capsys)
    assert code == 2 and one_error(err).startswith(f"--run-id {run_id!r} is not allowed as a run id")


@pytest.mark.parametrize("n", ["0", "-1"])
def test_num_processes_below_one_is_refused(tmp_path, capsys, n):
    code, err, _ = cli([*RUN, "--num-processes", n, "--out", tmp_path, "--dry-run"], capsys)
    assert code == 2 and one_error(err) == f"--num-processes must be at least 1, not {n}"


@pytest.mark.parametrize("body", ["import sys\nsys.exit(0)\n", "raise SystemExit(3)\n"])
def test_plugin_exiting_at_import_is_an_error(tmp_path, capsys, body):
    plugin = tmp_path / "exits.py"
    plugin.write_text(body)
    code, err, _ = cli(["list", "metrics", "--plugin", plugin], capsys)
    assert code == 2 and "called sys.exit(" in one_error(err) and "a plugin must register things" in err
