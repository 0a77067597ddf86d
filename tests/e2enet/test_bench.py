"""The E2ENet benchmark's settings: budget and width options and their errors."""

import pytest

from benchmarks import bench_e2enet as bench


def test_width_and_steps_override_the_defaults_only_where_given():
  full = bench.settings(quick=False)
  # The full run trains the paper's width (channels 48 doubling to a cap of 320).
  assert (full["base_channels"], full["max_channels"], full["steps"]) == (48, 320, 400)
  narrow = bench.settings(quick=False, steps=1000, width=(16, 128))
  assert (narrow["base_channels"], narrow["max_channels"], narrow["steps"]) == (16, 128, 1000)
  assert narrow["patch"] == full["patch"] and narrow["flop_patch"] == full["flop_patch"]
  assert bench.settings(quick=True, width=[4, 8])["base_channels"] == 4   # argparse gives lists


@pytest.mark.parametrize("width", [(8, 4), (0, 8), (16,), (8, 16, 32)])
def test_bad_width_is_a_clear_error(width):
  with pytest.raises(ValueError, match="width must be BASE MAX"):
    bench.settings(quick=False, width=width)


def test_steps_must_be_positive():
  with pytest.raises(ValueError, match="steps must be >= 1"):
    bench.settings(quick=True, steps=0)


@pytest.mark.parametrize("argv, message", [
    (["--cpu-inference", "--steps", "5"], "--seeds and --steps do not apply"),
    (["--cpu-inference", "--seeds", "2"], "--seeds and --steps do not apply"),
    (["--repeats", "2"], "--repeats applies to --cpu-inference only"),
])
def test_cpu_inference_options_do_not_mix_with_training_ones(monkeypatch, argv, message):
  monkeypatch.setattr("sys.argv", ["bench_e2enet", *argv])
  with pytest.raises(SystemExit, match=message):
    bench._main()
