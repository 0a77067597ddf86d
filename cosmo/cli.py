"""``jaxrepro cosmo ...``: the cosmology family's commands."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
  """Adds ``jaxrepro cosmo`` and its sub-families."""
  from cosmo.degb import cli as degb_cli
  cosmo = subparsers.add_parser("cosmo", help="cosmology: dEGB high-temperature cosmology, ...")
  cosmo_sub = cosmo.add_subparsers(dest="cosmo_command", metavar="COMMAND", required=True)
  degb_cli.register(cosmo_sub)
