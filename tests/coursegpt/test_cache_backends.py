"""Disk cache atomicity under interruption, resumable runs, and the HTTP backend's retries."""

import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from coursegpt.backends import BackendError, CachedBackend, GenParams, OpenAIBackend
from coursegpt.cache import DiskCache, atomic_write_text, cache_key
from coursegpt.distill import DistillConfig, answer_questions, distill_questions
from coursegpt.textbook import Paragraph

PARAGRAPHS = [Paragraph(f"p#{i}", f"Paragraph {i} about Python topic {i}.") for i in range(3)]


def teacher_script(messages, params):
  """Questions that depend on the prompt, so a resumed run must reproduce each call."""
  text = messages[-1]["content"]
  if text.startswith("Reference material"):
    return "Answer to: " + text.split("Question: ")[1]
  tag = abs(hash(text)) % 10_000
  return "\n".join(f"{i}. Question {tag} variant {i} about something new?" for i in range(2))


def test_atomic_write_leaves_nothing_on_interrupt(tmp_path, monkeypatch):
  target = tmp_path / "a" / "entry.json"
  atomic_write_text(target, "old")

  def interrupted(src, dst):
    raise KeyboardInterrupt
  monkeypatch.setattr(os, "replace", interrupted)
  with pytest.raises(KeyboardInterrupt):
    atomic_write_text(target, "new")
  assert target.read_text() == "old"  # the previous version is intact
  assert sorted(p.name for p in target.parent.iterdir()) == ["entry.json"]  # no temporary


def test_cache_key_covers_backend_model_prompt_and_params():
  base = cache_key("openai:http://h/v1", "m", [{"role": "user", "content": "x"}], {"seed": 0})
  assert base != cache_key("local", "m", [{"role": "user", "content": "x"}], {"seed": 0})
  assert base != cache_key("openai:http://h/v1", "m2", [{"role": "user", "content": "x"}],
                           {"seed": 0})
  assert base != cache_key("openai:http://h/v1", "m", [{"role": "user", "content": "y"}],
                           {"seed": 0})
  assert base != cache_key("openai:http://h/v1", "m", [{"role": "user", "content": "x"}],
                           {"seed": 1})


def _run(backend, config):
  result = distill_questions(PARAGRAPHS, [backend], config, seed=3)
  qa = answer_questions(result.questions, {p.id: p.text for p in PARAGRAPHS}, backend,
                        "Be a teacher.", "seed-0", config)
  return result, qa


def test_interrupted_run_resumes_without_repeating_calls(tmp_path, scripted):
  config = DistillConfig(expansion_rounds=1)
  reference = _run(CachedBackend(scripted(teacher_script), DiskCache(tmp_path / "ref")), config)
  total_calls = 2 * len(PARAGRAPHS) + len(reference[1])

  budget = {"left": 4}

  def dies_after_four(messages, params):
    if budget["left"] == 0:
      raise KeyboardInterrupt  # the process is killed mid-run
    budget["left"] -= 1
    return teacher_script(messages, params)

  cache = DiskCache(tmp_path / "cache")
  with pytest.raises(KeyboardInterrupt):
    _run(CachedBackend(scripted(dies_after_four), cache), config)
  entries = list((tmp_path / "cache").glob("*/*"))
  assert len(entries) == 4 and all(p.suffix == ".json" for p in entries)
  for path in entries:  # every entry is complete JSON
    assert json.loads(path.read_text())["response"]

  resumed_backend = scripted(teacher_script)
  resumed_cache = DiskCache(tmp_path / "cache")
  resumed = _run(CachedBackend(resumed_backend, resumed_cache), config)
  assert len(resumed_backend.requests) == total_calls - 4
  assert resumed_cache.hits == 4
  assert resumed[0].questions == reference[0].questions and resumed[1] == reference[1]
  # A third run makes no call at all.
  again = scripted(teacher_script)
  assert _run(CachedBackend(again, DiskCache(tmp_path / "cache")), config)[1] == reference[1]
  assert again.requests == []


def test_unreadable_entry_is_recomputed(tmp_path, caplog):
  cache = DiskCache(tmp_path)
  key = cache_key("b", "m", [], {})
  cache.put(key, "fine", {})
  path = next(tmp_path.glob("*/*.json"))
  path.write_text('{"response": "tru')  # as a non-atomic foreign writer could leave it
  with caplog.at_level(logging.WARNING):
    assert cache.get(key) is None
  assert "unreadable cache entry" in caplog.text


class _Flaky(BaseHTTPRequestHandler):
  """Fails the first two chat requests with 503, then answers; records headers."""
  seen = []

  def log_message(self, *args):
    """Keeps the test output free of the default per-request access log."""

  def _send(self, status, payload):
    data = json.dumps(payload).encode()
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def do_GET(self):
    self._send(200, {"data": [{"id": "flaky-model"}]})

  def do_POST(self):
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    type(self).seen.append((self.headers.get("Authorization"), body))
    if body["messages"][0]["content"] == "bad":
      return self._send(400, {"error": {"message": "bad request body", "type": "x"}})
    if len(type(self).seen) <= 2:
      return self._send(503, {"error": {"message": "busy", "type": "server_error"}})
    self._send(200, {"choices": [{"message": {"role": "assistant", "content": "hello"}}]})


@pytest.fixture
def flaky_url():
  _Flaky.seen = []
  server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{server.server_address[1]}/v1"
  server.shutdown()
  server.server_close()


def test_openai_backend_retries_with_backoff_and_hides_the_key(flaky_url, monkeypatch, caplog):
  monkeypatch.setenv("COURSEGPT_TEST_KEY", "sk-secret-123")
  backend = OpenAIBackend(flaky_url, api_key_env="COURSEGPT_TEST_KEY", backoff=0.01, retries=3)
  assert backend.model == "flaky-model"  # from GET /models
  assert backend.identity == "openai:http://127.0.0.1/v1"  # the ephemeral port is not in it
  with caplog.at_level(logging.WARNING):
    reply = backend.chat([{"role": "user", "content": "hi"}], GenParams(8, 0.0, seed=5))
  assert reply == "hello"
  assert [auth for auth, _ in _Flaky.seen] == ["Bearer sk-secret-123"] * 3
  assert _Flaky.seen[-1][1] == {"model": "flaky-model", "max_tokens": 8, "temperature": 0.0,
                                "top_p": 1.0, "seed": 5,
                                "messages": [{"role": "user", "content": "hi"}]}
  assert caplog.text.count("retrying") == 2
  assert "sk-secret" not in caplog.text and "sk-secret" not in repr(backend)
  # A client error is not retried and carries the server's message.
  with pytest.raises(BackendError, match="HTTP 400: bad request body"):
    backend.chat([{"role": "user", "content": "bad"}], GenParams(8))
  assert len(_Flaky.seen) == 4


def test_openai_backend_gives_up_clearly():
  backend_url = "http://127.0.0.1:9/v1"  # discard port: connection refused
  with pytest.raises(BackendError, match="after 2 tries"):
    OpenAIBackend(backend_url, model="m", retries=1, backoff=0.01).chat(
        [{"role": "user", "content": "x"}], GenParams(4))
  with pytest.raises(ValueError, match="http"):
    OpenAIBackend("ftp://x", model="m")
