"""Omega_m vs redshift in quasar/GRB data (arXiv 2405.19953) and dilaton-Einstein-Gauss-Bonnet cosmology (arXiv 2405.15998)."""
