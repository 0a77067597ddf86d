"""Figures of arXiv 2405.19953: Omega_m against z_eff per method, profiles, mock statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cosmo.distances import PLANCK_OMEGA_M  # noqa: E402


def plot_omegam_vs_zeff(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "",
                        bayes: Sequence[dict[str, Any]] | None = None) -> Path:
  """Best fit and intervals per subsample: Delta chi^2 = 1, profile distribution, posterior."""
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  z = np.array([r["z_eff_mean"] for r in rows])
  offset = 0.012 * (z.max() - z.min() + 1.0)

  def bars(x, centre, low, high, **kw):
    ax.errorbar(x, centre, yerr=[np.asarray(centre) - low, np.asarray(high) - centre],
                fmt="o", capsize=3, **kw)

  best = np.array([r["best_omega_m"] for r in rows])
  interval = np.array([r["interval_delta_chi2_1"] for r in rows])
  bars(z - offset, best, interval[:, 0], interval[:, 1], label=r"profile, $\Delta\chi^2=1$")
  dist = np.array([r["profile_distribution"]["interval_68"] for r in rows])
  median = np.array([r["profile_distribution"]["median"] for r in rows])
  bars(z, median, dist[:, 0], dist[:, 1], label="profile distribution, 68%")
  if bayes:
    q = [b["omega_m_quantiles"] for b in bayes]
    bars(z + offset, [x["0.5"] for x in q], np.array([x["0.16"] for x in q]),
         np.array([x["0.84"] for x in q]), label="NUTS marginal, 68%")
  ax.axhline(PLANCK_OMEGA_M, color="k", ls="--", lw=1, label=r"Planck $\Omega_m=0.315$")
  ax.set(xlabel=r"$z_\mathrm{eff}$ (mean redshift)", ylabel=r"$\Omega_m$", title=title)
  ax.legend(fontsize=8)
  return _save(fig, path)


def plot_profiles(omega: np.ndarray, chi2: np.ndarray, labels: Sequence[str], path: str | Path,
                  title: str = "") -> Path:
  """Delta chi^2(Omega_m) per subsample."""
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for row, label in zip(np.atleast_2d(chi2), labels):
    ax.plot(omega, row - row.min(), label=label)
  ax.axhline(1.0, color="gray", lw=0.8)
  ax.axvline(PLANCK_OMEGA_M, color="k", ls="--", lw=1)
  ax.set(xlabel=r"$\Omega_m$", ylabel=r"$\Delta\chi^2$", title=title, ylim=(0, 25))
  ax.legend(fontsize=7)
  return _save(fig, path)


def plot_mock_distributions(statistics: Sequence[np.ndarray], observed: Sequence[float],
                            labels: Sequence[str], path: str | Path) -> Path:
  """Histograms of the mocks' Delta chi^2(0.315) with the observed values and chi^2_1."""
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  top = max(max(float(np.max(s)) for s in statistics), 1.0)
  bins = np.linspace(0, top, 40)
  for s, obs, label in zip(statistics, observed, labels):
    line = ax.hist(s, bins=bins, density=True, histtype="step", label=label)[2][0]
    ax.axvline(obs, color=line.get_edgecolor(), ls=":")
  x = np.linspace(1e-3, top, 200)
  ax.plot(x, np.exp(-x / 2) / np.sqrt(2 * np.pi * x), "k--", lw=1, label=r"$\chi^2_1$ (Wilks)")
  ax.set(xlabel=r"mock $\Delta\chi^2(\Omega_m=0.315)$", ylabel="density", yscale="log")
  ax.legend(fontsize=7)
  return _save(fig, path)


def _save(fig, path) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
