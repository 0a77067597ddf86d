"""Omega_m vs redshift in quasar/GRB data (arXiv 2405.19953) and dilaton-Einstein-Gauss-Bonnet cosmology (arXiv 2405.15998)."""

from cosmo.analysis import OmegaMConfig, bayes_subsamples, calibrate_subsamples, profile_subsamples
from cosmo.bayes import PRIORS, omegam_model, run_nuts, summarize_posterior
from cosmo.binning import Subsample, equal_count_bins, redshift_cuts
from cosmo.catalogues import Catalogue, load_catalogue
from cosmo.distances import (PLANCK_OMEGA_M, comoving_distance, distance_modulus,
                             log10_luminosity_distance_cm, luminosity_distance_mpc)
from cosmo.intervals import summarize_profile
from cosmo.likelihoods import PROBE_DEFS, Probe, chi2, chi2_at, get_probe, simulate
from cosmo.mock_catalogue import mock_catalogue
from cosmo.mocks import calibrate, mock_profiles
from cosmo.optimize import fisher_scoring_minimize
from cosmo.profile import Profile, profile_likelihood

__all__ = [
    "OmegaMConfig", "profile_subsamples", "calibrate_subsamples", "bayes_subsamples",
    "PRIORS", "omegam_model", "run_nuts", "summarize_posterior",
    "Subsample", "equal_count_bins", "redshift_cuts",
    "Catalogue", "load_catalogue",
    "PLANCK_OMEGA_M", "comoving_distance", "distance_modulus", "log10_luminosity_distance_cm",
    "luminosity_distance_mpc",
    "summarize_profile",
    "PROBE_DEFS", "Probe", "chi2", "chi2_at", "get_probe", "simulate",
    "mock_catalogue", "calibrate", "mock_profiles", "fisher_scoring_minimize",
    "Profile", "profile_likelihood",
]
