import io
import json
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepro import metrics, progress


def test_jsonl_logger_appends_and_reads_back(tmp_path):
  path = tmp_path / "m" / "metrics.jsonl"
  log = metrics.MetricsLogger(path)
  log.log(1, loss=jnp.float32(2.5), acc=np.float64(0.5), vec=jnp.arange(3))
  log.log(2, loss=float("inf"))
  metrics.MetricsLogger(path).log(3, loss=1.0)  # a resumed run appends
  records = metrics.read_jsonl(path)
  assert records == [{"step": 1, "loss": 2.5, "acc": 0.5, "vec": [0, 1, 2]},
                     {"step": 2, "loss": None}, {"step": 3, "loss": 1.0}]
  assert metrics.curves_from_records(records, "loss") == ([1, 3], [2.5, 1.0])


def test_read_jsonl_names_the_bad_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"a": 1}\n{oops\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2"):
    metrics.read_jsonl(path)


def test_plot_curves_writes_a_png(tmp_path):
  out = metrics.plot_curves({"a": ([1, 2, 3], [3, 2, 1]), "b": ([1, 2, 3], [1, 2, 3])},
                            tmp_path / "c.png", ylabel="loss",
                            bands={"a": ([2, 1, 0], [4, 3, 2])})
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError):
    metrics.plot_curves({}, tmp_path / "none.png")


def test_progress_is_quiet_off_a_terminal(monkeypatch):
  monkeypatch.delenv(progress.QUIET_ENV, raising=False)
  monkeypatch.setattr(sys, "stderr", io.StringIO())
  assert progress.is_quiet() is True  # StringIO is not a TTY
  assert list(progress.progress(range(3))) == [0, 1, 2]
  assert sys.stderr.getvalue() == ""


def test_progress_draws_on_a_terminal_unless_quiet(monkeypatch):
  class FakeTTY(io.StringIO):
    def isatty(self):
      return True
  monkeypatch.setattr(sys, "stderr", FakeTTY())
  monkeypatch.delenv(progress.QUIET_ENV, raising=False)
  assert progress.is_quiet() is False
  list(progress.progress(range(3), desc="work"))
  assert "work" in sys.stderr.getvalue()
  monkeypatch.setenv(progress.QUIET_ENV, "1")
  assert progress.is_quiet() is True
