"""CLI registration and clear errors on bad input (no model is loaded)."""

import json

import pytest

from jaxrepro.cli import main


@pytest.mark.parametrize("argv,message", [
    (["coursegpt", "eval", "--qa-test", "{tmp}/missing.jsonl"], "missing.jsonl not found"),
    (["coursegpt", "optimize-prompt", "--qa", "{tmp}", "--rounds", "0"], "--rounds must be >= 1"),
    (["coursegpt", "sft", "--qa", "{tmp}", "--steps", "5"], "train.jsonl not found"),
    (["coursegpt", "distill", "--textbook", "{tmp}/none.txt", "--out", "{tmp}/o"],
     "no such file"),
    (["coursegpt", "distill"], "distill needs --out DIR"),
    (["coursegpt", "eval", "--qa-test", "{tmp}/bad.jsonl"], "record 0 lacks string field"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, argv, message):
  (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "q?"}) + "\n")
  code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
  assert code == 2
  assert message in capsys.readouterr().err


def test_every_command_has_help(capsys):
  for command in ("distill", "optimize-prompt", "sft", "eval"):
    with pytest.raises(SystemExit) as exit_info:
      main(["coursegpt", command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--json" in out and "--quick" in out
