"""``jaxrepro cosmo ...``: the cosmology family's commands.

``omegam`` (Omega_m vs effective redshift, arXiv 2405.19953) and ``degb``
(dilaton-Einstein-Gauss-Bonnet cosmology, arXiv 2405.15998).
"""

from __future__ import annotations

import argparse

from cosmo import cli_omegam
from cosmo.degb import cli as degb_cli


def register(subparsers: argparse._SubParsersAction) -> None:
  parser = subparsers.add_parser(
      "cosmo", help="cosmology: Omega_m vs redshift; dilaton-Einstein-Gauss-Bonnet cosmology")
  cosmo_subparsers = parser.add_subparsers(dest="cosmo_command", metavar="COMMAND", required=True)
  cli_omegam.register(cosmo_subparsers)
  degb_cli.register(cosmo_subparsers)
