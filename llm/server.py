"""A local OpenAI-compatible HTTP server for the decoder (stdlib ``http.server``, 127.0.0.1 only).

Endpoints (the subset of the OpenAI API that clients such as CourseGPT use):
``POST /v1/chat/completions`` (``messages``), ``POST /v1/completions`` (``prompt``: a string or a
list of strings), ``GET /v1/models``. Request fields: ``max_tokens``, ``temperature``, ``top_p``,
``seed``, ``stop`` (strings; the text is cut before the first one). ``stream`` is not supported.
Malformed requests get a 4xx with ``{"error": {"message", "type"}}``; requests run one at a
time (a lock around the model) while connections are accepted concurrently.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llm.ffnskip import SkipRule
from llm.generate import Generator, SamplingParams
from llm.model import Llama
from llm.tokenizer import Tokenizer

HOST = "127.0.0.1"
MAX_BODY_BYTES = 1 << 20
MAX_TOKENS_LIMIT = 2048


class BadRequest(ValueError):
  """A client error: reported as HTTP 400 with a JSON body."""


class Engine:
  """Tokenizer + generator behind a lock: one generation at a time."""

  def __init__(self, model: Llama, tokenizer: Tokenizer, *, model_name: str = "smollm2-135m",
               rule: SkipRule | None = None, warmup_tokens: int = 0):
    self.tokenizer = tokenizer
    self.generator = Generator(model, pad_id=tokenizer.pad_id, stop_ids=tokenizer.stop_ids)
    self.model_name = model_name
    self.rule = rule
    self.warmup_tokens = warmup_tokens
    self.max_len = model.config.max_seq_len
    self._lock = threading.Lock()

  def complete(self, prompt: str, body: dict[str, Any]) -> dict[str, Any]:
    """Generates for one prompt string; returns text, finish reason and token counts."""
    params = _sampling_params(body, self.warmup_tokens)
    stops = body.get("stop") or []
    stops = [stops] if isinstance(stops, str) else stops
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
      raise BadRequest("'stop' must be a non-empty string or a list of them")
    ids = self.tokenizer.encode(prompt)
    if not ids:
      raise BadRequest("the prompt is empty")
    if len(ids) + params.max_new_tokens > self.max_len:
      raise BadRequest(f"prompt ({len(ids)} tokens) + max_tokens ({params.max_new_tokens}) "
                       f"exceeds the context ({self.max_len})")
    with self._lock:
      out = self.generator.generate([ids], params, self.rule)
    tokens, finish = out.tokens[0], "stop" if out.stopped[0] else "length"
    text = self.tokenizer.decode(tokens)
    cut = [text.index(s) for s in stops if s in text]
    if cut:
      text, finish = text[:min(cut)], "stop"
    return {"text": text, "finish_reason": finish, "prompt_tokens": len(ids),
            "completion_tokens": len(tokens)}


def _number(body: dict[str, Any], key: str, default, kind, lo, hi):
  value = body.get(key, default)
  if value is None:
    value = default
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise BadRequest(f"'{key}' must be a number")
  value = kind(value)
  if not lo <= value <= hi:
    raise BadRequest(f"'{key}' must be in [{lo}, {hi}], got {value}")
  return value


def _sampling_params(body: dict[str, Any], warmup_tokens: int) -> SamplingParams:
  if body.get("stream"):
    raise BadRequest("'stream': true is not supported by this server")
  if body.get("n", 1) != 1:
    raise BadRequest("only n = 1 is supported")
  return SamplingParams(
      max_new_tokens=_number(body, "max_tokens", 128, int, 1, MAX_TOKENS_LIMIT),
      temperature=_number(body, "temperature", 0.0, float, 0.0, 2.0),
      top_p=_number(body, "top_p", 1.0, float, 1e-6, 1.0),
      seed=_number(body, "seed", 0, int, 0, 2**31 - 1),
      warmup_tokens=warmup_tokens)


def _usage(result: dict[str, Any]) -> dict[str, int]:
  return {"prompt_tokens": result["prompt_tokens"],
          "completion_tokens": result["completion_tokens"],
          "total_tokens": result["prompt_tokens"] + result["completion_tokens"]}


def chat_completion(engine: Engine, body: dict[str, Any]) -> dict[str, Any]:
  messages = body.get("messages")
  if not isinstance(messages, list) or not messages:
    raise BadRequest("'messages' must be a non-empty list")
  for m in messages:
    if not (isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)):
      raise BadRequest("each message needs string 'role' and 'content'")
  prompt = engine.tokenizer.apply_chat_template(
      [{"role": m["role"], "content": m["content"]} for m in messages])
  result = engine.complete(prompt, body)
  return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
          "created": int(time.time()), "model": engine.model_name,
          "choices": [{"index": 0, "finish_reason": result["finish_reason"],
                       "message": {"role": "assistant", "content": result["text"]}}],
          "usage": _usage(result)}


def completion(engine: Engine, body: dict[str, Any]) -> dict[str, Any]:
  prompts = body.get("prompt")
  prompts = [prompts] if isinstance(prompts, str) else prompts
  if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
    raise BadRequest("'prompt' must be a string or a non-empty list of strings")
  results = [engine.complete(p, body) for p in prompts]
  usage = {k: sum(_usage(r)[k] for r in results)
           for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
  return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion",
          "created": int(time.time()), "model": engine.model_name,
          "choices": [{"index": i, "text": r["text"], "finish_reason": r["finish_reason"],
                       "logprobs": None} for i, r in enumerate(results)],
          "usage": usage}


def make_handler(engine: Engine) -> type[BaseHTTPRequestHandler]:
  routes = {"/v1/chat/completions": chat_completion, "/v1/completions": completion}

  class Handler(BaseHTTPRequestHandler):
    server_version = "jaxrepro-llm/0.1"

    def log_message(self, format, *args):  # quiet: the CLI prints its own line per request
      pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
      data = json.dumps(payload).encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
      self._send(status, {"error": {"message": message, "type": kind}})

    def do_GET(self):
      if self.path.rstrip("/") == "/v1/models":
        self._send(200, {"object": "list", "data": [
            {"id": engine.model_name, "object": "model", "owned_by": "jaxrepro"}]})
      else:
        self._error(404, f"no route GET {self.path}", "not_found")

    def do_POST(self):
      route = routes.get(self.path.rstrip("/"))
      if route is None:
        return self._error(404, f"no route POST {self.path}", "not_found")
      try:
        length = int(self.headers.get("Content-Length", ""))
      except ValueError:
        return self._error(411, "a Content-Length header is required")
      if not 0 < length <= MAX_BODY_BYTES:
        return self._error(413 if length > 0 else 400, f"body must be 1..{MAX_BODY_BYTES} bytes")
      try:
        body = json.loads(self.rfile.read(length))
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return self._error(400, f"invalid JSON: {e}")
      if not isinstance(body, dict):
        return self._error(400, "the body must be a JSON object")
      try:
        self._send(200, route(engine, body))
      except (BadRequest, ValueError) as e:
        self._error(400, str(e))
      except Exception as e:  # keep serving; report as a server error
        self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {e}", "server_error")

  return Handler


def make_server(engine: Engine, port: int = 0) -> ThreadingHTTPServer:
  """A server bound to 127.0.0.1:``port`` (0: a free port; see ``server.server_address``)."""
  server = ThreadingHTTPServer((HOST, port), make_handler(engine))
  server.daemon_threads = False  # server_close() waits for requests in flight
  return server
