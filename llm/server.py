"""A local OpenAI-compatible HTTP server for the decoder (stdlib ``http.server``, 127.0.0.1 only).

Endpoints (the subset of the OpenAI API that clients such as CourseGPT use):
``POST /v1/chat/completions`` (``messages``), ``POST /v1/completions`` (``prompt``: a string or a
list of strings), ``GET /v1/models``. Request fields: ``max_tokens``, ``temperature``, ``top_p``,
``seed``, ``stop`` (strings; the text is cut before the first one), ``stream`` (server-sent
events: one ``data: {chunk}`` event per piece of text, as OpenAI's ``chat.completion.chunk`` /
``text_completion`` chunks, then ``data: [DONE]``). Malformed requests get a 4xx with
``{"error": {"message", "type"}}``; requests run one at a time (a lock around the model) while
connections are accepted concurrently.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
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

  def _prepare(self, prompt: str, body: dict[str, Any]
               ) -> tuple[list[int], SamplingParams, list[str]]:
    """Validates a request for one prompt: ``(ids, sampling params, stop strings)``."""
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
    return ids, params, stops

  def complete(self, prompt: str, body: dict[str, Any]) -> dict[str, Any]:
    """Generates for one prompt string; returns text, finish reason and token counts."""
    ids, params, stops = self._prepare(prompt, body)
    with self._lock:
      out = self.generator.generate([ids], params, self.rule)
    tokens, finish = out.tokens[0], "stop" if out.stopped[0] else "length"
    text = self.tokenizer.decode(tokens)
    cut = [text.index(s) for s in stops if s in text]
    if cut:
      text, finish = text[:min(cut)], "stop"
    return {"text": text, "finish_reason": finish, "prompt_tokens": len(ids),
            "completion_tokens": len(tokens)}

  def stream(self, prompt: str, body: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    """Validates now, then (lazily, holding the model lock) yields ``(text_delta, None)`` pieces
    and finally ``("", finish_reason)``. The pieces concatenate to :meth:`complete`'s text:
    text that could begin a stop string, or an unfinished UTF-8 character, is held back."""
    ids, params, stops = self._prepare(prompt, body)
    hold = max((len(s) for s in stops), default=1) - 1

    def pieces():
      tokens, sent, finish = [], 0, None
      with self._lock:
        for token in self.generator.stream(ids, params, self.rule):
          tokens.append(token)
          text = self.tokenizer.decode(tokens)
          cut = [text.index(s) for s in stops if s in text]
          if cut:
            text, finish = text[:min(cut)], "stop"
            break
          if text.endswith("\ufffd"):  # the rest of a multi-byte character is still to come
            continue
          if len(text) - hold > sent:
            yield text[sent:len(text) - hold], None
            sent = len(text) - hold
      if finish is None:
        text = self.tokenizer.decode(tokens)
        finish = "length" if len(tokens) == params.max_new_tokens else "stop"
      if len(text) > sent:
        yield text[sent:], None
      yield "", finish

    return pieces()


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
  if not isinstance(body.get("stream", False), bool):
    raise BadRequest("'stream' must be true or false")
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


def _chat_prompt(engine: Engine, body: dict[str, Any]) -> str:
  messages = body.get("messages")
  if not isinstance(messages, list) or not messages:
    raise BadRequest("'messages' must be a non-empty list")
  for m in messages:
    if not (isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)):
      raise BadRequest("each message needs string 'role' and 'content'")
  return engine.tokenizer.apply_chat_template(
      [{"role": m["role"], "content": m["content"]} for m in messages])


def _header(engine: Engine, prefix: str, kind: str) -> dict[str, Any]:
  return {"id": f"{prefix}-{uuid.uuid4().hex[:24]}", "object": kind,
          "created": int(time.time()), "model": engine.model_name}


def chat_completion(engine: Engine, body: dict[str, Any]
                    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
  """A ``chat.completion``, or with ``stream`` an iterator of ``chat.completion.chunk``s."""
  prompt = _chat_prompt(engine, body)
  if body.get("stream"):
    pieces = engine.stream(prompt, body)
    header = _header(engine, "chatcmpl", "chat.completion.chunk")

    def chunks():
      with contextlib.closing(pieces):  # a client that leaves releases the model at once
        yield {**header, "choices": [{"index": 0, "delta": {"role": "assistant"},
                                      "finish_reason": None}]}
        for text, finish in pieces:
          delta = {"content": text} if text else {}
          yield {**header, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return chunks()
  result = engine.complete(prompt, body)
  return {**_header(engine, "chatcmpl", "chat.completion"),
          "choices": [{"index": 0, "finish_reason": result["finish_reason"],
                       "message": {"role": "assistant", "content": result["text"]}}],
          "usage": _usage(result)}


def completion(engine: Engine, body: dict[str, Any]
               ) -> dict[str, Any] | Iterator[dict[str, Any]]:
  """A ``text_completion`` (one choice per prompt), or with ``stream`` an iterator of its
  chunks, prompt after prompt (``choices[0].index`` names the prompt)."""
  prompts = body.get("prompt")
  prompts = [prompts] if isinstance(prompts, str) else prompts
  if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
    raise BadRequest("'prompt' must be a string or a non-empty list of strings")
  if body.get("stream"):
    streams = [engine.stream(p, body) for p in prompts]  # validates every prompt first
    header = _header(engine, "cmpl", "text_completion")

    def chunks():
      for i, pieces in enumerate(streams):
        with contextlib.closing(pieces):
          for text, finish in pieces:
            yield {**header, "choices": [{"index": i, "text": text, "finish_reason": finish,
                                          "logprobs": None}]}
    return chunks()
  results = [engine.complete(p, body) for p in prompts]
  usage = {k: sum(_usage(r)[k] for r in results)
           for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
  return {**_header(engine, "cmpl", "text_completion"),
          "choices": [{"index": i, "text": r["text"], "finish_reason": r["finish_reason"],
                       "logprobs": None} for i, r in enumerate(results)],
          "usage": usage}


def make_handler(engine: Engine) -> type[BaseHTTPRequestHandler]:
  routes = {"/v1/chat/completions": chat_completion, "/v1/completions": completion}

  class Handler(BaseHTTPRequestHandler):
    server_version = "jaxrepro-llm/0.1"

    def log_message(self, format, *args):
      """Silent: the CLI prints its own line per request."""

    def _send(self, status: int, payload: dict[str, Any]) -> None:
      data = json.dumps(payload).encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def _send_events(self, chunks: Iterator[dict[str, Any]]) -> None:
      """Server-sent events; the connection closes after ``[DONE]`` (HTTP/1.0 framing)."""
      self.send_response(200)
      self.send_header("Content-Type", "text/event-stream")
      self.send_header("Cache-Control", "no-cache")
      self.end_headers()
      try:
        for chunk in chunks:
          self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
          self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
      except (BrokenPipeError, ConnectionResetError):
        chunks.close()  # the client left: stop generating and release the model
      except Exception as e:  # headers are out: report in-band, as OpenAI does
        error = {"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error"}}
        self.wfile.write(f"data: {json.dumps(error)}\n\n".encode())

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
        result = route(engine, body)
        if isinstance(result, dict):
          self._send(200, result)
        else:
          self._send_events(result)
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
