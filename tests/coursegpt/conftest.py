"""A deterministic scripted backend (for the bookkeeping unit tests only)."""

from typing import Callable

import pytest


class ScriptedBackend:
  """Answers ``chat`` with ``script(messages, params)``; records every call."""

  def __init__(self, script: Callable, identity: str = "scripted", model: str = "script"):
    self.script = script
    self.identity = identity
    self.model = model
    self.requests = []

  def chat(self, messages, params):
    self.requests.append((messages, params))
    return self.script(messages, params)


@pytest.fixture
def scripted():
  return ScriptedBackend
