"""Helpers for the test suites: run code in a fresh process with N fake CPU devices."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def run_with_devices(code: str, n_devices: int = 8, timeout: float = 300,
                     env: dict[str, str] | None = None) -> str:
  """Runs ``code`` in a new Python process that sees ``n_devices`` CPU devices
  (``--xla_force_host_platform_device_count``); returns its stdout, raising
  ``AssertionError`` with stderr when it fails."""
  full_env = dict(os.environ)
  full_env["XLA_FLAGS"] = (full_env.get("XLA_FLAGS", "") +
                           f" --xla_force_host_platform_device_count={n_devices}").strip()
  full_env["JAX_PLATFORMS"] = "cpu"
  full_env.update(env or {})
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                        capture_output=True, text=True, timeout=timeout)
  if proc.returncode != 0:
    raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
  return proc.stdout
