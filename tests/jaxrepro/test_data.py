from pathlib import Path

import pytest

from jaxrepro import data


def test_explicit_path_wins_and_must_exist(tmp_path):
  f = tmp_path / "x.csv"
  f.write_text("1")
  src = data.resolve_data("cosmo/x.csv", explicit=f, env={data.DATA_ENV: str(tmp_path)})
  assert (src.origin, src.path) == ("explicit", f.resolve())
  with pytest.raises(FileNotFoundError, match="--data"):
    data.resolve_data("cosmo/x.csv", explicit=tmp_path / "missing.csv")


def test_env_then_shared_then_embedded(tmp_path, monkeypatch):
  (tmp_path / "graphs").mkdir()
  (tmp_path / "graphs" / "g.npz").write_bytes(b"")
  src = data.resolve_data("graphs/g.npz", env={data.DATA_ENV: str(tmp_path)}, embedded="karate")
  assert src.origin == "env" and src.describe() == str((tmp_path / "graphs" / "g.npz").resolve())

  shared = tmp_path / "shared"
  (shared / "graphs").mkdir(parents=True)
  (shared / "graphs" / "only_shared.npz").write_bytes(b"")
  monkeypatch.setattr(data, "shared_data_dir", lambda: shared)
  src = data.resolve_data("graphs/only_shared.npz", env={}, embedded="karate")
  assert src.origin == "shared"

  src = data.resolve_data("graphs/absent.npz", env={}, embedded="karate")
  assert (src.origin, src.path, src.describe()) == ("embedded", None, "embedded:karate")

  def make_default():
    p = tmp_path / "generated.txt"
    p.write_text("x")
    return p
  src = data.resolve_data("graphs/absent.npz", env={}, embedded=make_default)
  assert src.describe() == "embedded:generated.txt" and src.path.exists()

  with pytest.raises(FileNotFoundError, match="tried"):
    data.resolve_data("graphs/absent.npz", env={})


def test_shared_data_dir_is_beside_the_checkout():
  assert data.shared_data_dir() == data.REPO_ROOT.parent / "shared" / "data"
