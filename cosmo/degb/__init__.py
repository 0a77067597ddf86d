"""High-temperature dilaton-Einstein-Gauss-Bonnet cosmology (arXiv:2405.15998, 2303.05813).

Autonomous system and its critical points, flows from radiation domination towards high
temperature (diffrax, vmapped), the eight evolution paths, the thermal gravitational-wave
background enhancement and the BBN bound on the reheating temperature.
"""

from cosmo.degb import equations, thermal
from cosmo.degb.fixed_points import FixedPoint, fixed_points, scaling_w, stability
from cosmo.degb.flows import (InitialCondition, Params, Solution, classify_path,
                              initial_condition, integrate, integrate_batch)
from cosmo.degb.gw import bbn_bound_TRH, gw_enhancement

__all__ = ["equations", "thermal", "FixedPoint", "fixed_points", "scaling_w", "stability",
           "InitialCondition", "Params", "Solution", "classify_path", "initial_condition",
           "integrate", "integrate_batch", "gw_enhancement", "bbn_bound_TRH"]
