import pytest


@pytest.fixture(scope="session")
def smollm2():
  """(model, tokenizer, path) of the embedded SmolLM2-135M-Instruct GGUF, loaded once."""
  from llm.gguf_loader import load_smollm2, smollm2_path
  from llm.tokenizer import tokenizer_from_gguf
  try:
    path = smollm2_path()
  except FileNotFoundError as e:
    pytest.skip(str(e))
  return load_smollm2(max_seq_len=1024), tokenizer_from_gguf(path), path


@pytest.fixture(scope="session")
def smollm2_tokenizer():
  from llm.gguf_loader import smollm2_path
  from llm.tokenizer import tokenizer_from_gguf
  try:
    return tokenizer_from_gguf(smollm2_path())
  except FileNotFoundError as e:
    pytest.skip(str(e))
