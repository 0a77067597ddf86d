"""LLM backends behind one small interface: ``chat(messages, params) -> str``.

``OpenAIBackend`` talks to any OpenAI-compatible endpoint over HTTP (stdlib ``urllib``): timeouts,
retries with exponential backoff on connection errors, 429 and 5xx, and an API key read from an
environment variable at request time (never stored in the object's repr, never logged).
``LocalBackend`` runs the suite's own decoder in process through the server's request handling
(``llm.server.chat_completion``), so both paths accept the same requests.
``CachedBackend`` puts a :class:`coursegpt.cache.DiskCache` in front of either.
Teacher, judge and student are separate backends, so each can point somewhere else.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Protocol

from coursegpt.cache import DiskCache, cache_key

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclasses.dataclass(frozen=True)
class GenParams:
  """Sampling parameters of one call (part of the cache key)."""
  max_tokens: int = 128
  temperature: float = 0.0
  top_p: float = 1.0
  seed: int = 0

  def request_fields(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


class Backend(Protocol):
  identity: str  # where the model runs: the cache namespace
  model: str

  def chat(self, messages: Messages, params: GenParams) -> str: ...


class BackendError(RuntimeError):
  """A backend failed after its retries, or refused the request."""


def _identity_of(base_url: str) -> str:
  """The base URL, without the port for loopback hosts: a local server's port is ephemeral,
  and a re-run against a fresh one must still find its cache."""
  parts = urllib.parse.urlsplit(base_url)
  host = parts.hostname or ""
  netloc = host if host in _LOOPBACK else parts.netloc
  return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class OpenAIBackend:
  """``POST {base_url}/chat/completions``; ``base_url`` ends in ``/v1``."""

  def __init__(self, base_url: str, model: str | None = None, *,
               api_key_env: str = "OPENAI_API_KEY", timeout: float = 300.0, retries: int = 4,
               backoff: float = 1.0):
    if not base_url.startswith(("http://", "https://")):
      raise ValueError(f"backend URL must start with http:// or https://, got {base_url!r}")
    self.base_url = base_url.rstrip("/")
    self.identity = "openai:" + _identity_of(self.base_url)
    self.api_key_env = api_key_env
    self.timeout = timeout
    self.retries = retries
    self.backoff = backoff
    self.model = model or self._first_model()

  def __repr__(self) -> str:
    return f"OpenAIBackend({self.base_url!r}, model={self.model!r}, key from ${self.api_key_env})"

  def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(self.api_key_env)
    if key:
      headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    url = self.base_url + path
    for attempt in range(self.retries + 1):
      request = urllib.request.Request(url, data=data, headers=headers, method=method)
      try:
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
          return json.loads(response.read())
      except urllib.error.HTTPError as e:
        detail = _error_message(e)
        if e.code not in _RETRY_STATUS or attempt == self.retries:
          raise BackendError(f"{method} {url}: HTTP {e.code}: {detail}") from None
        reason = f"HTTP {e.code}"
      except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        if attempt == self.retries:
          raise BackendError(f"{method} {url}: {e} (after {self.retries + 1} tries)") from None
        reason = type(e).__name__
      delay = self.backoff * 2 ** attempt
      log.warning("%s %s failed (%s); retrying in %.1f s", method, url, reason, delay)
      time.sleep(delay)
    raise AssertionError("unreachable")

  def _first_model(self) -> str:
    models = self._request("GET", "/models").get("data") or []
    if not models:
      raise BackendError(f"{self.base_url}/models lists no model; pass a model name")
    return models[0]["id"]

  def chat(self, messages: Messages, params: GenParams) -> str:
    body = {"model": self.model, "messages": messages, **params.request_fields()}
    response = self._request("POST", "/chat/completions", body)
    try:
      return response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
      raise BackendError(f"unexpected response from {self.base_url}: {response!r:.300}") from None


def _error_message(error: urllib.error.HTTPError) -> str:
  try:
    return json.loads(error.read())["error"]["message"]
  except Exception:  # a non-JSON error page: its status line says enough
    return error.reason


class LocalBackend:
  """The suite's decoder in this process (an :class:`llm.server.Engine`)."""

  def __init__(self, engine, name: str | None = None):
    self.engine = engine
    self.model = name or engine.model_name
    self.identity = "local"

  def chat(self, messages: Messages, params: GenParams) -> str:
    from llm.server import chat_completion
    body = {"messages": messages, **params.request_fields()}
    return chat_completion(self.engine, body)["choices"][0]["message"]["content"]


class CachedBackend:
  """A backend whose calls are memoized on disk; ``calls`` counts the ones actually made."""

  def __init__(self, backend: Backend, cache: DiskCache):
    self.backend = backend
    self.cache = cache
    self.identity = backend.identity
    self.model = backend.model
    self.calls = 0

  def chat(self, messages: Messages, params: GenParams) -> str:
    fields = params.request_fields()
    key = cache_key(self.identity, self.model, messages, fields)
    cached = self.cache.get(key)
    if cached is not None:
      return cached
    response = self.backend.chat(messages, params)
    self.calls += 1
    self.cache.put(key, response, {"backend": self.identity, "model": self.model,
                                   "messages": messages, "params": fields})
    return response
