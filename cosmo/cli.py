"""``jaxrepro cosmo ...``: the cosmology family's commands."""

from __future__ import annotations

import argparse

from cosmo import cli_omegam


def register(subparsers: argparse._SubParsersAction) -> None:
  parser = subparsers.add_parser("cosmo", help="cosmology: Omega_m vs redshift (arXiv 2405.19953)")
  cosmo_subparsers = parser.add_subparsers(dest="cosmo_command", metavar="COMMAND")
  cli_omegam.register(cosmo_subparsers)
