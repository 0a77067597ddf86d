"""``jaxrepro <family> <command> ...``: one CLI for the whole suite.

Families plug in through the ``jaxrepro.families`` entry-point group (setup.cfg): each
entry ``NAME = package.module:register`` names a function ``register(subparsers)`` that adds
``jaxrepro NAME`` and its subcommands, each with ``set_defaults(func=handler)``; a handler
takes the parsed ``argparse.Namespace`` and returns an exit code (or None for 0).
Shared flags (``--quick --data --out --json --seed``) come from :func:`add_common_args`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Sequence

from jaxrepro.progress import QUIET_ENV

ENTRY_POINT_GROUP = "jaxrepro.families"


def add_common_args(parser: argparse.ArgumentParser, *, data_help: str | None = None) -> None:
  """Adds DESIGN.md's common flags to a command's parser."""
  parser.add_argument("--quick", action="store_true",
                      help="small configuration for a quick check (far less work than the default; "
                      "seconds to minutes on 2 CPU cores, see README)")
  parser.add_argument("--data", metavar="PATH", default=None,
                      help=data_help or "input data (default: $JAXREPRO_DATA, ../shared/data, "
                      "then the embedded default; the report says which was used)")
  parser.add_argument("--out", metavar="DIR", default=None, help="directory for plots and a "
                      "Markdown summary")
  parser.add_argument("--json", metavar="PATH", default=None,
                      help="write the machine-readable result here")
  parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _cmd_info(args: argparse.Namespace) -> int:
  from jaxrepro.bench import env_info
  info = env_info()
  for key, value in info.items():
    print(f"{key:>18}: {value}")
  if args.json:
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(info, indent=2) + "\n")
  return 0


def _cmd_bench(args: argparse.Namespace) -> int:
  from jaxrepro import bench
  registry = bench.registered_benchmarks()
  if args.list or not (registry or args.names):
    if not registry:
      print("no benchmarks are registered yet (benchmarks/bench_<name>.py registers one)")
    for name in registry:
      print(name)
    return 0
  try:
    reports = bench.run_benchmarks(args.names, quick=args.quick, out_dir=args.out)
  except KeyError as e:
    print(f"jaxrepro bench: {e.args[0]}", file=sys.stderr)
    return 2
  for report in reports:
    print(f"wrote {Path(args.out) / report.name}.json and .md")
  return 0


def _register_families(subparsers: argparse._SubParsersAction) -> list[str]:
  failures = []
  for entry in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
    try:
      entry.load()(subparsers)
    except ImportError as e:  # a family whose optional extra is not installed
      failures.append(f"{entry.name}: {e}")
  return failures


def build_parser() -> tuple[argparse.ArgumentParser, list[str]]:
  parser = argparse.ArgumentParser(
      prog="jaxrepro", description="JAX/Flax reproductions of ten research papers.")
  parser.add_argument("--quiet", action="store_true", help="no progress bars")
  parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
  subparsers = parser.add_subparsers(dest="family", metavar="COMMAND")

  info = subparsers.add_parser("info", help="JAX version, backend, devices, process count")
  info.add_argument("--json", metavar="PATH", help="also write the fields as JSON")
  info.set_defaults(func=_cmd_info)

  bench = subparsers.add_parser("bench", help="run registered benchmarks, write reports/")
  bench.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
  bench.add_argument("--quick", action="store_true", help="small configurations")
  bench.add_argument("--out", default="reports", metavar="DIR", help="report directory")
  bench.add_argument("--list", action="store_true", help="list registered benchmarks")
  bench.set_defaults(func=_cmd_bench)

  failures = _register_families(subparsers)
  return parser, failures


def main(argv: Sequence[str] | None = None) -> int:
  parser, failures = build_parser()
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                      format="%(levelname)s %(name)s: %(message)s")
  for failure in failures:
    logging.getLogger("jaxrepro.cli").warning("family not available: %s", failure)
  if args.quiet:
    os.environ[QUIET_ENV] = "1"
  func = getattr(args, "func", None)
  if func is None:
    parser.print_help()
    return 0 if args.family is None else 2
  try:
    code = func(args)
  except (ValueError, FileNotFoundError) as e:  # bad input: a clear message, not a traceback
    print(f"jaxrepro: error: {e}", file=sys.stderr)
    return 2
  return 0 if code is None else int(code)


if __name__ == "__main__":
  sys.exit(main())
