"""Tokenizer rebuilt from GGUF metadata; CLI errors and help."""

import pytest

from jaxrepro.cli import main
from llm.corpus import pydoc_topics


def test_round_trip_and_special_tokens(smollm2_tokenizer):
  tok = smollm2_tokenizer
  text = pydoc_topics()[0][:2000] + " 1234 ünïcödé ✓"
  assert tok.decode(tok.encode(text)) == text
  # Digits are split one per token (SmolLM2's pre-tokenizer); specials stay single ids.
  assert len(tok.encode("1234")) == 4
  assert tok.encode("<|im_start|>user") [0] == 1 and tok.stop_ids == (2,)
  chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
  assert chat.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
  assert chat.startswith("<|im_start|>system\n")
  with pytest.raises(ValueError):
    tok.apply_chat_template([{"content": "no role"}])


def test_cli_help_and_bad_input(capsys, tmp_path):
  with pytest.raises(SystemExit) as e:
    main(["llm", "eval-skip", "--help"])
  assert e.value.code == 0 and "--ratios" in capsys.readouterr().out
  assert main(["llm", "generate", "--prompt", "x", "--gguf", str(tmp_path / "none.gguf")]) == 2
  assert "not found" in capsys.readouterr().err
  with pytest.raises(SystemExit) as e:
    main(["llm", "eval-skip", "--ratios", "0.1,2"])
  assert e.value.code == 2


def test_generate_says_which_model_on_stderr(capsys, monkeypatch):
  import llm.cli

  class NoTokens:
    def encode(self, text):
      return []
  monkeypatch.setattr(llm.cli, "_load", lambda gguf: (None, NoTokens(), "embedded:test.gguf"))
  assert main(["llm", "generate", "--prompt", "x"]) == 2  # empty after encoding: stops early
  assert "model: embedded:test.gguf" in capsys.readouterr().err


def test_eval_skip_says_which_model_and_text(capsys, monkeypatch):
  import types

  import llm.cli
  import llm.corpus
  import llm.skip_eval

  class Stop(Exception):
    """Ends the command once it has printed its data line."""

  def stop(*args, **kwargs):
    raise Stop
  text = types.SimpleNamespace(source=types.SimpleNamespace(describe=lambda: "embedded:text"))
  monkeypatch.setattr(llm.cli, "_load", lambda gguf: (None, None, "embedded:test.gguf"))
  monkeypatch.setattr(llm.corpus, "load_corpus", lambda data: text)
  monkeypatch.setattr(llm.skip_eval, "evaluate_skipping", stop)
  with pytest.raises(Stop):
    main(["--quiet", "llm", "eval-skip"])
  assert "data: model embedded:test.gguf, text embedded:text" in capsys.readouterr().out
