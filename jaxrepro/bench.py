"""Timing, memory and FLOP measurement, and benchmark reports.

Timings follow one protocol everywhere: warm-up calls first (compilation excluded), then
``repeats`` timed calls, each ended by ``jax.block_until_ready`` so asynchronous dispatch
cannot make work look free; the median is reported with min and max.

Reports are written as ``<out>/<name>.json`` and ``<out>/<name>.md`` with the schema of
DESIGN.md: ``command``, ``config``, ``data``, ``metrics``, ``timings``, ``env``.
Benchmarks live in ``benchmarks/bench_<name>.py`` and register with :func:`benchmark`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import pkgutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np

from jaxrepro.metrics import to_jsonable


@dataclasses.dataclass(frozen=True)
class Timing:
  """Wall-clock seconds of ``repeats`` calls after warm-up."""
  median: float
  min: float
  max: float
  runs: tuple[float, ...]

  def as_dict(self) -> dict[str, float]:
    return {"median": self.median, "min": self.min, "max": self.max, "repeats": len(self.runs)}


def time_fn(fn: Callable[..., Any], *args: Any, warmup: int = 1, repeats: int = 5,
            **kwargs: Any) -> Timing:
  """Times ``fn(*args, **kwargs)``, blocking on its (pytree) output each call."""
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  for _ in range(warmup):
    jax.block_until_ready(fn(*args, **kwargs))
  runs = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args, **kwargs))
    runs.append(time.perf_counter() - start)
  return Timing(statistics.median(runs), min(runs), max(runs), tuple(runs))


def pytree_bytes(tree: Any) -> int:
  """Total bytes of the array leaves of ``tree`` (arrays or ``jax.ShapeDtypeStruct``).

  Sub-byte dtypes (int4) count their packed size, rounded up per leaf.
  """
  total = 0
  for leaf in jax.tree.leaves(tree):
    if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
      continue
    dtype = np.dtype(leaf.dtype) if not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) \
        else None
    if dtype is None:  # typed PRNG key: count its raw data
      data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
      total += int(np.prod(data.shape)) * np.dtype(data.dtype).itemsize
      continue
    bits = getattr(dtype, "itemsize", 0) * 8
    if dtype.name in ("int4", "uint4"):
      bits = 4
    total += (int(np.prod(leaf.shape)) * bits + 7) // 8
  return total


def _compile(fn: Callable[..., Any], *args: Any, **kwargs: Any):
  jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
  return jitted.lower(*args, **kwargs).compile()


def compiled_memory(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, int]:
  """XLA's memory analysis of ``jit(fn)`` for these arguments (arrays or ShapeDtypeStructs).

  Returns bytes for arguments, outputs, temporaries, aliased buffers and generated code,
  plus ``peak_estimate`` = arguments + outputs + temporaries - aliased.
  """
  analysis = _compile(fn, *args, **kwargs).memory_analysis()
  if analysis is None:
    raise RuntimeError("this backend provides no memory analysis")
  fields = {
      "argument_bytes": analysis.argument_size_in_bytes,
      "output_bytes": analysis.output_size_in_bytes,
      "temp_bytes": analysis.temp_size_in_bytes,
      "alias_bytes": analysis.alias_size_in_bytes,
      "generated_code_bytes": analysis.generated_code_size_in_bytes,
  }
  fields = {k: int(v) for k, v in fields.items()}
  fields["peak_estimate"] = (fields["argument_bytes"] + fields["output_bytes"]
                             + fields["temp_bytes"] - fields["alias_bytes"])
  return fields


def compiled_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
  """FLOPs of ``jit(fn)`` for these arguments from XLA's cost analysis."""
  cost = _compile(fn, *args, **kwargs).cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returns one dict per computation
    cost = cost[0] if cost else {}
  if not cost or "flops" not in cost:
    raise RuntimeError("this backend provides no FLOP count")
  return float(cost["flops"])


def env_info() -> dict[str, Any]:
  """JAX version, backend and device layout of this process (initializes the backend)."""
  devices = jax.devices()
  return {
      "jax": jax.__version__,
      "jaxlib": getattr(importlib.import_module("jaxlib"), "__version__", "unknown"),
      "backend": jax.default_backend(),
      "device_count": jax.device_count(),
      "local_device_count": jax.local_device_count(),
      "process_count": jax.process_count(),
      "process_index": jax.process_index(),
      "devices": [f"{d.platform}:{d.id} {getattr(d, 'device_kind', '')}".strip() for d in devices],
  }


@dataclasses.dataclass
class Report:
  """One command's result, in DESIGN.md's schema."""
  name: str
  command: str
  config: dict[str, Any] = dataclasses.field(default_factory=dict)
  data: Any = None
  metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
  timings: dict[str, Any] = dataclasses.field(default_factory=dict)
  env: dict[str, Any] = dataclasses.field(default_factory=env_info)
  notes: list[str] = dataclasses.field(default_factory=list)

  def as_dict(self) -> dict[str, Any]:
    return to_jsonable({
        "command": self.command, "config": self.config, "data": self.data,
        "metrics": self.metrics, "timings": self.timings, "env": self.env,
        "notes": self.notes,
    })

  def write_json(self, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
    return path

  def markdown(self) -> str:
    d = self.as_dict()
    lines = [f"# {self.name}", "", f"`{d['command']}`", "", f"Data: {d['data']}", ""]
    for section in ("metrics", "timings", "config"):
      if d[section]:
        lines += [f"## {section}", "", "| key | value |", "| --- | --- |"]
        for key, value in _flatten(d[section]):
          lines.append(f"| {key} | {_fmt(value)} |")
        lines.append("")
    if d["notes"]:
      lines += ["## notes", ""] + [f"- {n}" for n in d["notes"]] + [""]
    env = d["env"]
    lines.append(f"_jax {env.get('jax')}, backend {env.get('backend')}, "
                 f"{env.get('device_count')} device(s)_")
    return "\n".join(lines) + "\n"

  def write(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = self.write_json(out / f"{self.name}.json")
    md_path = out / f"{self.name}.md"
    md_path.write_text(self.markdown())
    return json_path, md_path


def _flatten(d: Mapping[str, Any], prefix: str = ""):
  for key, value in d.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping) and value:
      yield from _flatten(value, name + ".")
    else:
      yield name, value


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.6g}"
  if isinstance(value, list) and len(value) > 8:
    return f"[{', '.join(_fmt(v) for v in value[:8])}, … ({len(value)} items)]"
  return str(value)


# ---- benchmark registry ---------------------------------------------------------------

BenchmarkFn = Callable[..., Report]
_REGISTRY: dict[str, BenchmarkFn] = {}


def benchmark(name: str) -> Callable[[BenchmarkFn], BenchmarkFn]:
  """Registers ``fn(quick: bool, out_dir: Path) -> Report`` as benchmark ``name``."""
  def register(fn: BenchmarkFn) -> BenchmarkFn:
    if name in _REGISTRY and _REGISTRY[name] is not fn:
      raise ValueError(f"benchmark {name!r} registered twice")
    _REGISTRY[name] = fn
    return fn
  return register


def registered_benchmarks() -> dict[str, BenchmarkFn]:
  """Imports every ``benchmarks/bench_*.py`` module and returns the registry."""
  try:
    package = importlib.import_module("benchmarks")
  except ImportError:
    return dict(_REGISTRY)
  for module in pkgutil.iter_modules(package.__path__):
    if module.name.startswith("bench_"):
      importlib.import_module(f"benchmarks.{module.name}")
  return dict(sorted(_REGISTRY.items()))


def run_benchmarks(names: list[str] | None, *, quick: bool, out_dir: str | os.PathLike
                   ) -> list[Report]:
  """Runs the named benchmarks (all when ``names`` is empty) and writes their reports."""
  registry = registered_benchmarks()
  names = list(registry) if not names else names
  unknown = [n for n in names if n not in registry]
  if unknown:
    raise KeyError(f"unknown benchmark(s) {unknown}; registered: {sorted(registry) or 'none'}")
  reports = []
  for name in names:
    report = registry[name](quick=quick, out_dir=Path(out_dir))
    report.write(out_dir)
    reports.append(report)
  return reports


def doc_summary(doc: str) -> str:
  """A module docstring's first paragraph on one line: a benchmark's ``--help`` description
  (its first line alone often stops mid-sentence)."""
  return " ".join(doc.strip().split("\n\n")[0].split())


def benchmark_main(run: BenchmarkFn, description: str = "",
                   argv: list[str] | None = None) -> Report:
  """The command line of ``python -m benchmarks.bench_<name> [--quick] [--out DIR]``:
  runs ``run``, writes its report and prints the Markdown summary. Bad input (``ValueError``,
  ``FileNotFoundError``) exits with status 2 and the message, not a traceback."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--quick", action="store_true", help="small configuration")
  parser.add_argument("--out", default="reports", metavar="DIR", help="report directory")
  args = parser.parse_args(argv)
  try:
    report = run(quick=args.quick, out_dir=Path(args.out))
  except (ValueError, FileNotFoundError) as e:  # bad input: a clear message, as `jaxrepro` does
    parser.error(str(e))
  json_path, md_path = report.write(args.out)
  print(report.markdown())
  print(f"wrote {json_path} and {md_path}")
  return report
