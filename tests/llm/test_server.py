"""The OpenAI-compatible server over a real socket (a small random decoder, SmolLM2's tokenizer)."""

import json
import threading
import urllib.error
import urllib.request

import pytest
from flax import nnx

from llm.generate import SamplingParams
from llm.model import Llama, LlamaConfig
from llm.server import Engine, make_server


@pytest.fixture(scope="module")
def served(smollm2_tokenizer):
  config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_layers=2,
                       num_heads=2, num_kv_heads=1, tie_embeddings=True, max_seq_len=256)
  engine = Engine(Llama(config, rngs=nnx.Rngs(0)), smollm2_tokenizer, model_name="tiny")
  server = make_server(engine, port=0)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield engine, f"http://127.0.0.1:{server.server_address[1]}"
  server.shutdown()
  server.server_close()


def _post(url, payload, raw=None):
  data = raw if raw is not None else json.dumps(payload).encode()
  request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def test_chat_round_trip_equals_direct_generation(served):
  engine, base = served
  status, body = _post(f"{base}/v1/chat/completions",
                       {"messages": [{"role": "user", "content": "Name a colour."}],
                        "max_tokens": 12})
  assert status == 200 and body["object"] == "chat.completion"
  prompt = engine.tokenizer.apply_chat_template([{"role": "user", "content": "Name a colour."}])
  ids = engine.tokenizer.encode(prompt)
  direct = engine.generator.generate([ids], SamplingParams(max_new_tokens=12))
  assert body["choices"][0]["message"]["content"] == engine.tokenizer.decode(direct.tokens[0])
  assert body["usage"]["prompt_tokens"] == len(ids)
  assert body["usage"]["completion_tokens"] == len(direct.tokens[0])


def test_completions_concurrent_requests_are_consistent(served):
  _, base = served
  payload = {"prompt": ["The sea is", "Python is"], "max_tokens": 12}
  results = [None] * 4

  def call(i):
    results[i] = _post(f"{base}/v1/completions", payload)

  threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert all(status == 200 for status, _ in results)
  texts = [[c["text"] for c in body["choices"]] for _, body in results]
  assert all(t == texts[0] for t in texts) and len(texts[0]) == 2  # greedy: identical answers


@pytest.mark.parametrize("payload,raw", [
    (None, b"{not json"),
    ({"messages": "hello"}, None),
    ({"messages": [{"role": "user"}]}, None),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}, None),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, None),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}, None),
])
def test_bad_requests_get_4xx_json(served, payload, raw):
  _, base = served
  status, body = _post(f"{base}/v1/chat/completions", payload, raw)
  assert 400 <= status < 500 and body["error"]["message"]
  status, body = _post(f"{base}/v1/completions", {"prompt": "still alive", "max_tokens": 12})
  assert status == 200


def test_unknown_route_and_models(served):
  _, base = served
  status, body = _post(f"{base}/v1/engines", {})
  assert status == 404 and "error" in body
  with urllib.request.urlopen(f"{base}/v1/models", timeout=30) as response:
    assert json.loads(response.read())["data"][0]["id"] == "tiny"


def _stream(url, payload):
  """POSTs with ``stream: true``; returns the content type and the decoded SSE events."""
  request = urllib.request.Request(url, data=json.dumps({**payload, "stream": True}).encode(),
                                   headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(request, timeout=120) as response:
    kind, raw = response.headers["Content-Type"], response.read().decode()
  events = raw.split("\n\n")
  assert events[-1] == "" and all(e.startswith("data: ") for e in events[:-1]), raw
  data = [e[len("data: "):] for e in events[:-1]]
  assert data[-1] == "[DONE]"
  return kind, [json.loads(d) for d in data[:-1]]


def test_chat_stream_sse_equals_non_streamed(served):
  _, base = served
  payload = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 12}
  _, whole = _post(f"{base}/v1/chat/completions", payload)
  kind, chunks = _stream(f"{base}/v1/chat/completions", payload)
  assert kind == "text/event-stream"
  assert all(c["object"] == "chat.completion.chunk" for c in chunks)
  assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
  pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks[1:]]
  assert sum(bool(p) for p in pieces) > 1  # text arrives in several events
  assert "".join(pieces) == whole["choices"][0]["message"]["content"]
  finishes = [c["choices"][0]["finish_reason"] for c in chunks]
  assert finishes[-1] == whole["choices"][0]["finish_reason"] and not any(finishes[:-1])


def test_completions_stream_with_stop_equals_non_streamed(served):
  _, base = served
  _, plain = _post(f"{base}/v1/completions", {"prompt": "The sea is", "max_tokens": 12})
  text = plain["choices"][0]["text"]
  stop = text[len(text) // 2:len(text) // 2 + 2]  # a stop string inside the continuation
  payload = {"prompt": ["The sea is", "Python is"], "max_tokens": 12, "stop": stop}
  _, whole = _post(f"{base}/v1/completions", payload)
  _, chunks = _stream(f"{base}/v1/completions", payload)
  for i, choice in enumerate(whole["choices"]):
    mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == i]
    assert "".join(c["text"] for c in mine) == choice["text"]
    assert mine[-1]["finish_reason"] == choice["finish_reason"]
  assert whole["choices"][0]["text"] == text[:text.index(stop)]
  assert whole["choices"][0]["finish_reason"] == "stop"


def test_stream_bad_request_is_4xx_before_streaming(served):
  _, base = served
  status, body = _post(f"{base}/v1/completions", {"prompt": "x", "stream": "yes"})
  assert status == 400 and "stream" in body["error"]["message"]
  status, body = _post(f"{base}/v1/completions", {"prompt": ["ok", ""], "stream": True})
  assert status == 400 and body["error"]["message"]
