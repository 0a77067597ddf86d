"""Figures: phase portraits in the compactified chart, the path map, w(T), T_RH bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cosmo.degb import equations
from cosmo.degb.fixed_points import fixed_points, stability


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def compactify(x, u):
  """The chart ``(X, V) = (x/(1+|x|), u/(1+|u|))``: ``|u| = ∞`` sits at ``V = ±1``."""
  return x / (1 + np.abs(x)), u / (1 + np.abs(u))


def phase_portrait(gamma: float, path) -> Path:
  """Stream plot of the high-T flow (``τ = -N``) in the compactified chart, Ω_r < 0 greyed."""
  plt = _plt()
  X, V = np.meshgrid(np.linspace(-0.97, 0.97, 121), np.linspace(-0.995, 0.995, 121))
  x, u = X / (1 - np.abs(X)), V / (1 - np.abs(V))
  dx, du = equations.flow(x, u, gamma)
  dX, dV = -dx * (1 - np.abs(X)) ** 2, -du * (1 - np.abs(V)) ** 2   # towards high T
  speed = np.hypot(dX, dV)
  unphysical = equations.omega_r(x, u) < 0
  fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
  ax.streamplot(X, V, np.where(unphysical, np.nan, dX / (speed + 1e-12)),
                np.where(unphysical, np.nan, dV / (speed + 1e-12)), density=1.3, linewidth=0.6,
                color="tab:blue", arrowsize=0.8)
  ax.contourf(X, V, unphysical.astype(float), levels=[0.5, 1.5], colors=["0.85"])
  for p in fixed_points(gamma):
    kind = stability(p, gamma)["kind"]
    px, pu = (p.x, p.u) if np.isfinite(p.u) else (0.0, np.sign(p.u) * np.inf)
    PX = px / (1 + abs(px))
    PV = np.sign(pu) if np.isinf(pu) else pu / (1 + abs(pu))
    ax.plot(PX, PV, "o", ms=8, color="tab:red" if kind == "attractor" else "k",
            mfc="tab:red" if kind == "attractor" else "white")
    ax.annotate(f"{p.name}\nw={p.w:.2f}", (PX, PV), fontsize=7, xytext=(4, 4), textcoords="offset points")
  ax.set_xlabel("x/(1+|x|),  x = φ'/(√6 H)")
  ax.set_ylabel("u/(1+|u|),  u = 8 f'(φ) H²")
  ax.set_title(f"dEGB flow towards high T, γ = {gamma:g} (red: attractors; grey: Ω_r < 0)", fontsize=9)
  return _save(fig, path)


def path_map(params: dict, labels: list[dict], path) -> Path:
  """Path of each (γ, x0) grid point, one panel per sign of α."""
  plt = _plt()
  names = sorted({lab["path"] for lab in labels})
  index = {n: i for i, n in enumerate(names)}
  gammas, x0s = params["gamma_axis"], params["x0_axis"]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), dpi=110, sharey=True)
  cmap = plt.get_cmap("tab10", max(len(names), 1))
  for ax, sign in zip(axes, (1.0, -1.0)):
    grid = np.full((len(gammas), len(x0s)), np.nan)
    for s, g, x0, lab in zip(params["sign_alpha"], params["gamma"], params["x0"], labels):
      if s == sign:
        grid[np.argmin(np.abs(gammas - g)), np.argmin(np.abs(x0s - x0))] = index[lab["path"]]
    ax.imshow(grid, origin="lower", aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5,
              extent=(-0.5, len(x0s) - 0.5, -0.5, len(gammas) - 0.5), interpolation="nearest")
    ticks = np.linspace(0, len(x0s) - 1, 5).astype(int)
    ax.set_xticks(ticks, [f"{x0s[t]:.0e}" for t in ticks], fontsize=7)
    gt = np.linspace(0, len(gammas) - 1, 5).astype(int)
    ax.set_yticks(gt, [f"{gammas[t]:.2f}" for t in gt])
    ax.axhline(np.interp(np.sqrt(6), gammas, np.arange(len(gammas))), color="w", ls="--", lw=1)
    ax.set_xlabel("x0 = φ'/(√6H) at T0 = 1 MeV")
    ax.set_title(f"α {'>' if sign > 0 else '<'} 0  (dashed: γ = √6)", fontsize=9)
  axes[0].set_ylabel("γ")
  handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(names))]
  fig.legend(handles, names, loc="lower center", ncol=3, fontsize=7)
  fig.subplots_adjust(bottom=0.28)
  return _save(fig, path, tight=False)


def w_curves(sol, labels: list[dict], path) -> Path:
  """w(T) for one representative trajectory of each path."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
  seen = set()
  for i, lab in enumerate(labels):
    if lab["path"] in seen or lab["final"] in ("failed", "unsettled"):
      continue
    seen.add(lab["path"])
    ax.plot(np.asarray(sol.ln_T[i]) / np.log(10), np.asarray(sol.w[i]), lw=1.2,
            label=f"{lab['path']} (γ={float(sol.gamma[i][0]):.2f}, α{'>' if float(sol.sign_u[i][0]) > 0 else '<'}0)")
  ax.set_xlabel("log10 T / GeV")
  ax.set_ylabel("w_eff")
  ax.set_ylim(-0.6, 2.6)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6)
  return _save(fig, path)


def bbn_bounds(gammas, alphas_km2, rows, t_max, path) -> Path:
  """Upper bound on T_RH vs |α| for each γ (α < 0: the w = -1/3 region)."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=110)
  for g in gammas:
    sel = [r for r in rows if r["sign_alpha"] < 0 and r["gamma"] == g]
    a = np.array([r["alpha_km2"] for r in sel])
    b = np.array([r["T_RH_max"] if r["bounded"] else np.nan for r in sel])
    ax.loglog(a, b, marker="o", ms=3, label=f"γ={g:.2f}")
  ax.axhspan(1e8, 1e9, color="0.9", label="paper: 1e8-1e9 GeV")
  ax.set_xlabel("|α| / km²  (α < 0)")
  ax.set_ylabel("max T_RH / GeV  (ΔN_eff^GW ≤ bound)")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=6, ncol=2)
  return _save(fig, path)


def _save(fig, path, tight=True) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if tight:
    fig.tight_layout()
  fig.savefig(path)
  _plt().close(fig)
  return path
