import jax
import pytest

from jaxrepro.data import shared_data_dir


@pytest.fixture
def x64():
  """float64 for chi^2 comparisons at the 1e-6 level (scoped: other families keep float32)."""
  with jax.enable_x64(True):
    yield


@pytest.fixture
def cosmo_data():
  path = shared_data_dir() / "cosmo"
  if not path.is_dir():
    pytest.skip(f"real cosmology data not found at {path} (tests on it are skipped)")
  return path
