"""The E2ENet benchmark's settings: budget and width options and their errors."""

import pytest

from benchmarks import bench_e2enet as bench


def test_width_and_steps_override_the_defaults_only_where_given():
  full = bench.settings(quick=False)
  assert (full["base_channels"], full["max_channels"], full["steps"]) == (16, 128, 400)
  paper = bench.settings(quick=False, steps=1000, width=(48, 320))
  assert (paper["base_channels"], paper["max_channels"], paper["steps"]) == (48, 320, 1000)
  assert paper["patch"] == full["patch"] and paper["flop_patch"] == full["flop_patch"]
  assert bench.settings(quick=True, width=[4, 8])["base_channels"] == 4   # argparse gives lists


@pytest.mark.parametrize("width", [(8, 4), (0, 8), (16,), (8, 16, 32)])
def test_bad_width_is_a_clear_error(width):
  with pytest.raises(ValueError, match="width must be BASE MAX"):
    bench.settings(quick=False, width=width)


def test_steps_must_be_positive():
  with pytest.raises(ValueError, match="steps must be >= 1"):
    bench.settings(quick=True, steps=0)
