"""High-temperature dilaton-Einstein-Gauss-Bonnet cosmology (arXiv:2405.15998, 2303.05813).

Autonomous system and its critical points, flows from radiation domination towards high
temperature (diffrax, vmapped), the eight evolution paths, the thermal gravitational-wave
background enhancement and the BBN bound on the reheating temperature.
"""

import jax

jax.config.update("jax_enable_x64", True)  # the flows span ~40 e-folds and |u| up to e^80

from cosmo.degb import equations, thermal  # noqa: E402
from cosmo.degb.fixed_points import FixedPoint, fixed_points, scaling_w, stability  # noqa: E402
from cosmo.degb.flows import (InitialCondition, Params, Solution, classify_path,  # noqa: E402
                              initial_condition, integrate, integrate_batch)
from cosmo.degb.gw import bbn_bound_TRH, gw_enhancement  # noqa: E402

__all__ = ["equations", "thermal", "FixedPoint", "fixed_points", "scaling_w", "stability",
           "InitialCondition", "Params", "Solution", "classify_path", "initial_condition",
           "integrate", "integrate_batch", "gw_enhancement", "bbn_bound_TRH"]
