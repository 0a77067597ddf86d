"""From a profile chi^2(Omega_m) to a best fit, intervals and a tension with Planck.

Two prescriptions (arXiv 2405.19953, Sec. 3):

- **Delta chi^2**: the interval where Delta chi^2 <= 1, and the tension
  sqrt(Delta chi^2(Omega_m = 0.315)) in sigma (Wilks' theorem, one parameter). Exact for a
  Gaussian profile; it is what gives the paper's 3.9 sigma (GRB) and 7.9 sigma (QSO).
- **Profile distribution** (the generalisation, arXiv 2206.11447, 2307.16349):
  R(Omega_m) = exp(-Delta chi^2 / 2) normalised over the allowed range (the grid), read as a
  distribution: the 68% central interval and the probability beyond Planck's value (on the
  far side from the median) come from integration, so it also works when the profile has no interior minimum (a best fit on the
  boundary). The tail probability is converted to sigma one-sidedly, which equals the
  Delta chi^2 figure for a Gaussian profile far from the boundaries.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from cosmo.distances import PLANCK_OMEGA_M

ONE_SIGMA = stats.norm.cdf(1.0) - stats.norm.cdf(-1.0)


def best_fit(omega: np.ndarray, chi2: np.ndarray) -> tuple[float, float]:
  """(Omega_m, chi2_min): the grid minimum, refined by a parabola through its neighbours."""
  i = int(np.argmin(chi2))
  if 0 < i < len(omega) - 1:
    x, y = omega[i - 1:i + 2], chi2[i - 1:i + 2]
    a, b, c = np.polyfit(x, y, 2)
    if a > 0:
      vertex = -b / (2 * a)
      if x[0] <= vertex <= x[2]:
        return float(vertex), float(min(c - b * b / (4 * a), chi2[i]))
  return float(omega[i]), float(chi2[i])


def _crossing(x0, x1, y0, y1, level):
  return float(x0 + (level - y0) * (x1 - x0) / (y1 - y0))


def delta_chi2_interval(omega: np.ndarray, delta: np.ndarray, best: float, level: float = 1.0):
  """The connected interval around ``best`` where delta <= level, by linear interpolation.

  Returns (low, high, low_open, high_open); an open side stops at the grid's edge.
  """
  i = int(np.clip(np.searchsorted(omega, best), 1, len(omega) - 1))
  i = i if delta[i] <= delta[i - 1] else i - 1
  lo = i
  while lo > 0 and delta[lo - 1] <= level:
    lo -= 1
  hi = i
  while hi < len(omega) - 1 and delta[hi + 1] <= level:
    hi += 1
  low_open, high_open = lo == 0, hi == len(omega) - 1
  low = omega[0] if low_open else _crossing(omega[lo - 1], omega[lo], delta[lo - 1], delta[lo], level)
  high = omega[-1] if high_open else _crossing(omega[hi], omega[hi + 1], delta[hi], delta[hi + 1],
                                               level)
  return float(low), float(high), low_open, high_open


def profile_distribution(omega: np.ndarray, delta: np.ndarray):
  """R = exp(-Delta chi^2 / 2) normalised by the trapezoid rule, and its CDF on the grid."""
  r = np.exp(-0.5 * (delta - delta.min()))
  cdf = np.concatenate([[0.0], np.cumsum(0.5 * (r[1:] + r[:-1]) * np.diff(omega))])
  return r / cdf[-1], cdf / cdf[-1]


def _quantile(omega, cdf, q):
  return float(np.interp(q, cdf, omega))


def summarize_profile(omega: np.ndarray, chi2: np.ndarray,
                      reference: float = PLANCK_OMEGA_M) -> dict:
  """Best fit, Delta chi^2 = 1 interval, tension at ``reference``, profile-distribution figures."""
  omega, chi2 = np.asarray(omega, np.float64), np.asarray(chi2, np.float64)
  if not omega[0] <= reference <= omega[-1]:
    raise ValueError(f"the Omega_m grid [{omega[0]}, {omega[-1]}] must contain {reference}")
  best, chi2_min = best_fit(omega, chi2)
  delta = np.maximum(chi2 - chi2_min, 0.0)
  low, high, low_open, high_open = delta_chi2_interval(omega, delta, best)
  delta_ref = float(np.interp(reference, omega, delta))
  _, cdf = profile_distribution(omega, delta)
  below = float(np.interp(reference, omega, cdf))
  median = _quantile(omega, cdf, 0.5)
  tail = below if median >= reference else 1.0 - below
  return {
      "best_omega_m": best,
      "chi2_min": chi2_min,
      "interval_delta_chi2_1": [low, high],
      "interval_open": [bool(low_open), bool(high_open)],
      "delta_chi2_at_planck": delta_ref,
      "sigma_at_planck": math.sqrt(delta_ref),
      "profile_distribution": {
          "median": median,
          "interval_68": [_quantile(omega, cdf, 0.5 - ONE_SIGMA / 2),
                          _quantile(omega, cdf, 0.5 + ONE_SIGMA / 2)],
          "probability_beyond_planck": tail,
          "sigma_at_planck": float(stats.norm.isf(max(tail, 1e-300))),
      },
  }
