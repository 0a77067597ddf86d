import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepro import bench


@jax.jit
def _slow(x):
  # ~100s of ms of dependent matmuls: dispatch returns long before the result exists.
  def body(_, y):
    return jnp.tanh(y @ y) * 0.5
  return jax.lax.fori_loop(0, 60, body, x)


def test_time_fn_waits_for_the_device():
  x = jax.random.normal(jax.random.PRNGKey(0), (384, 384))
  jax.block_until_ready(_slow(x))
  start = time.perf_counter()
  out = _slow(x)
  dispatch = time.perf_counter() - start
  jax.block_until_ready(out)
  blocked = time.perf_counter() - start
  assert dispatch < 0.5 * blocked, "async dispatch not observable; the test would prove nothing"
  timing = bench.time_fn(_slow, x, warmup=1, repeats=3)
  assert timing.min >= 0.5 * blocked
  assert timing.min <= timing.median <= timing.max
  assert len(timing.runs) == 3


def test_time_fn_rejects_zero_repeats():
  with pytest.raises(ValueError):
    bench.time_fn(lambda: 1, repeats=0)


def test_pytree_bytes_counts_arrays_and_abstract_shapes():
  tree = {"a": jnp.zeros((3, 4), jnp.float32), "b": [jnp.zeros(10, jnp.int8)],
          "c": jax.ShapeDtypeStruct((1000, 1000), jnp.bfloat16), "d": "not an array",
          "e": jax.ShapeDtypeStruct((5,), jnp.int4)}
  assert bench.pytree_bytes(tree) == 48 + 10 + 2_000_000 + 3


def test_compiled_flops_and_memory_of_a_matmul():
  m, k, n = 64, 128, 32
  a = jax.ShapeDtypeStruct((m, k), jnp.float32)
  b = jax.ShapeDtypeStruct((k, n), jnp.float32)
  flops = bench.compiled_flops(jnp.matmul, a, b)
  assert flops == pytest.approx(2 * m * k * n, rel=0.05)
  mem = bench.compiled_memory(jnp.matmul, a, b)
  assert mem["argument_bytes"] == 4 * (m * k + k * n)
  assert mem["output_bytes"] == 4 * m * n
  assert mem["peak_estimate"] >= mem["argument_bytes"] + mem["output_bytes"]


def test_report_writes_json_and_markdown(tmp_path):
  report = bench.Report("demo", command="jaxrepro demo", config={"steps": 3},
                        data="embedded:toy", metrics={"loss": np.float32(1.5), "nan": float("nan")},
                        timings={"step": bench.Timing(0.2, 0.1, 0.3, (0.1, 0.2, 0.3)).as_dict()})
  json_path, md_path = report.write(tmp_path)
  d = json.loads(json_path.read_text())
  assert set(d) >= {"command", "config", "data", "metrics", "timings", "env"}
  assert d["metrics"] == {"loss": 1.5, "nan": None}
  assert d["timings"]["step"]["median"] == 0.2
  assert d["env"]["backend"] == jax.default_backend()
  md = md_path.read_text()
  assert "| loss | 1.5 |" in md and "| step.median | 0.2 |" in md


def test_benchmark_registry_runs_by_name(tmp_path):
  @bench.benchmark("unit_test_bench")
  def _run(quick, out_dir):
    return bench.Report("unit_test_bench", command=f"quick={quick}", metrics={"x": 1})
  reports = bench.run_benchmarks(["unit_test_bench"], quick=True, out_dir=tmp_path)
  assert reports[0].command == "quick=True"
  assert (tmp_path / "unit_test_bench.json").exists()
  with pytest.raises(KeyError, match="unknown benchmark"):
    bench.run_benchmarks(["no_such_bench"], quick=True, out_dir=tmp_path)
  bench._REGISTRY.pop("unit_test_bench")


def test_benchmark_main_runs_and_writes(tmp_path, capsys):
  def run(quick, out_dir):
    return bench.Report("cli_bench", command=f"quick={quick}", metrics={"y": 2})
  report = bench.benchmark_main(run, "demo", ["--quick", "--out", str(tmp_path)])
  assert report.command == "quick=True"
  assert json.loads((tmp_path / "cli_bench.json").read_text())["metrics"] == {"y": 2}
  assert "| y | 2 |" in capsys.readouterr().out


@pytest.mark.parametrize("error", [ValueError("unknown modalities ['audio']"),
                                   FileNotFoundError("no corpus at /nowhere")])
def test_benchmark_main_turns_bad_input_into_a_usage_error(tmp_path, capsys, error):
  def run(quick, out_dir):
    raise error
  with pytest.raises(SystemExit) as exit_info:
    bench.benchmark_main(run, "demo", ["--out", str(tmp_path)])
  assert exit_info.value.code == 2
  assert f"error: {error}" in capsys.readouterr().err
  assert not list(tmp_path.iterdir())  # no report written


def test_benchmark_main_lets_other_errors_through(tmp_path):
  def run(quick, out_dir):
    raise RuntimeError("a bug, not bad input")
  with pytest.raises(RuntimeError, match="a bug"):
    bench.benchmark_main(run, "demo", ["--out", str(tmp_path)])


def test_doc_summary_is_the_whole_first_paragraph_on_one_line():
  doc = """\nFirst sentence runs over
  two lines (and ends here).

  Details that --help leaves out.\n"""
  assert bench.doc_summary(doc) == "First sentence runs over two lines (and ends here)."


def test_benchmark_help_is_not_cut_mid_sentence():
  import subprocess
  import sys
  out = subprocess.run([sys.executable, "-m", "benchmarks.bench_ffnskip", "--help"],
                       capture_output=True, text=True, check=True).stdout
  assert "greedy agreement)." in " ".join(out.split())
