import pytest

from iqabench.contracts.specs import GeneratorSpec, SpecError, parse_seeds
from iqabench.io.prompts import PromptFileError, load_prompts


def test_generator_spec_round_trip_and_canonical_order():
    spec = GeneratorSpec.parse("guidance:topiq_nr[variant=x0,alpha=30]")
    assert spec.family == "guidance" and spec.variant == "topiq_nr"
    assert spec.options_dict == {"alpha": 30, "variant": "x0"}
    assert str(spec) == "guidance:topiq_nr[alpha=30,variant=x0]"
    assert GeneratorSpec.parse(str(spec)) == spec
    assert str(GeneratorSpec.parse("tiny-sd[guidance_scale=1.0]")) == "tiny-sd[guidance_scale=1.0]"


@pytest.mark.parametrize("bad", ["", "a b", "x[novalue]", "x[y=1"])
def test_bad_generator_specs(bad):
    with pytest.raises(SpecError):
        GeneratorSpec.parse(bad)


def test_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("0-1,7,1") == [0, 1, 7]
    with pytest.raises(SpecError):
        parse_seeds("3-1")
    with pytest.raises(SpecError):
        parse_seeds("a")


def test_builtin_sets():
    assert len(load_prompts("parti")) == 1632
    assert len(load_prompts("geneval")) == 553
    smoke = load_prompts("smoke", limit=3)
    assert [p.prompt_id for p in smoke] == ["smoke:0", "smoke:1", "smoke:2"]


def test_unknown_builtin_set_suggests():
    with pytest.raises(PromptFileError, match="Did you mean 'parti'"):
        load_prompts("partii")


def test_prompt_file_formats(tmp_path):
    (tmp_path / "p.txt").write_text("# comment\na cat\n\n a dog \n", encoding="utf-8")
    (tmp_path / "p.csv").write_text('id,caption\n1,"a cat, sitting"\n2,a dog\n', encoding="utf-8")
    (tmp_path / "p.tsv").write_text("Prompt\tCategory\na cat\tAnimals\n", encoding="utf-8")
    (tmp_path / "p.jsonl").write_text('{"prompt": "a cat"}\n\n{"prompt": "a dog"}\n', encoding="utf-8")
    assert [p.text for p in load_prompts(str(tmp_path / "p.txt"))] == ["a cat", "a dog"]
    assert [p.text for p in load_prompts(str(tmp_path / "p.csv"))] == ["a cat, sitting", "a dog"]
    assert [p.text for p in load_prompts(str(tmp_path / "p.tsv"))] == ["a cat"]
    assert [p.text for p in load_prompts(str(tmp_path / "p.jsonl"), limit=1)] == ["a cat"]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("empty.txt", b"\n\n", "holds no prompts"),
    ("latin1.txt", "a cat\ncaf\xe9 au lait\n".encode("latin-1"), r"not valid UTF-8 \(bad byte at line 2\)"),
    ("p.jsonl", b'{"prompt": "a"}\n{oops\n', "line 2: not valid JSON"),
    ("p.csv", b'prompt\na cat\n""\n', "prompt 2 is empty"),
], ids=["empty-file", "non-utf8", "bad-jsonl-line", "empty-csv-row"])
def test_bad_prompt_file_is_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PromptFileError, match=message):
        load_prompts(str(path))


def test_folder_as_prompt_file_is_a_clear_error(tmp_path):
    (tmp_path / "prompts").mkdir()
    with pytest.raises(PromptFileError, match="is a folder"):
        load_prompts(str(tmp_path / "prompts"))


def test_missing_column(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,description\n1,a cat\n", encoding="utf-8")
    with pytest.raises(PromptFileError, match="has no prompt column.*found id, description"):
        load_prompts(str(path))
    with pytest.raises(PromptFileError, match="has no column 'text2'"):
        load_prompts(str(path), column="text2")
    assert load_prompts(str(path), column="description")[0].text == "a cat"

