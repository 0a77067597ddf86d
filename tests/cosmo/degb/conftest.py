import jax
import pytest


@pytest.fixture(autouse=True)
def _float64():
  """The dEGB checks (1e-8 .. 1e-10) need float64; scoped so other families keep float32."""
  with jax.enable_x64(True):
    yield
