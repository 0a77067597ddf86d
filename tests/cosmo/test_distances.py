import jax
import numpy as np
import pytest
from scipy.integrate import quad

from cosmo import distances
from cosmo.distances import SPEED_OF_LIGHT_KM_S

# jitted: eager dispatch of the quadrature's small ops dominates test time otherwise
comoving_distance = jax.jit(distances.comoving_distance)
luminosity_distance_mpc = jax.jit(distances.luminosity_distance_mpc, static_argnames="h0")
distance_modulus = jax.jit(distances.distance_modulus)
log10_luminosity_distance_cm = jax.jit(distances.log10_luminosity_distance_cm)

pytestmark = pytest.mark.usefixtures("x64")

Z = np.array([2.5, 0.009, 7.54, 0.3, 1.0, 4.2, 0.0, 9.3, 1e-4, 19.9])


@pytest.mark.parametrize("omega_m", [0.0, 0.05, 0.315, 0.9, 1.5, 3.0, 10.0])
def test_comoving_distance_matches_quad(omega_m):
  def integrand(z):
    return 1.0 / np.sqrt(omega_m * (1 + z) ** 3 + 1 - omega_m)
  reference = np.array([quad(integrand, 0, z, epsabs=0, epsrel=1e-12)[0] for z in Z])
  got = np.asarray(comoving_distance(Z, omega_m))
  np.testing.assert_allclose(got, reference, rtol=1e-8, atol=1e-15)  # the issue asks 1e-6
  # log10 d_L interpolates ln(D_C / z) instead: the same 1e-8 relative on d_L
  log_dl = np.asarray(log10_luminosity_distance_cm(Z, omega_m))
  positive = Z > 0
  reference_log_dl = np.log10((1 + Z[positive]) * reference[positive] * SPEED_OF_LIGHT_KM_S
                              / 70.0 * distances.MPC_CM)
  np.testing.assert_allclose(log_dl[positive], reference_log_dl, rtol=0, atol=1e-8 / np.log(10))


def test_closed_forms_einstein_de_sitter_and_empty():
  z = np.linspace(0.0, 8.0, 17).reshape(1, 17)  # any shape
  np.testing.assert_allclose(comoving_distance(z, 1.0), 2 * (1 - 1 / np.sqrt(1 + z)), rtol=1e-8)
  np.testing.assert_allclose(comoving_distance(z, 0.0), z, rtol=1e-12)
  dl = luminosity_distance_mpc(z, 1.0, h0=70.0)
  np.testing.assert_allclose(dl, (1 + z) * 2 * (1 - 1 / np.sqrt(1 + z)) * SPEED_OF_LIGHT_KM_S / 70,
                             rtol=1e-8)
  mu = distance_modulus(z, 1.0)  # through the ln(D_C / z) interpolant
  exact_dl = (1 + z[:, 1:]) * 2 * (1 - 1 / np.sqrt(1 + z[:, 1:])) * SPEED_OF_LIGHT_KM_S / 70
  np.testing.assert_allclose(mu[:, 1:], 5 * np.log10(exact_dl * 1e5), rtol=0, atol=5e-8)


@pytest.mark.parametrize("name", ["comoving_distance", "log10_luminosity_distance_cm"])
def test_derivative_in_omega_m_matches_finite_differences(name):
  """The custom JVP (Omega_m derivative integrated alongside the integrand) against
  differences of the values; forward and reverse mode agree."""
  f = getattr(distances, name)
  # log d_L (~28) is -inf at z = 0; its differences carry ~3e-9 rounding
  z, atol = (Z, 1e-10) if name == "comoving_distance" else (Z[Z > 0], 1e-8)
  grad = jax.jit(jax.vmap(jax.grad(lambda om, z: f(z, om)), in_axes=(None, 0)))
  forward = jax.jit(lambda om: jax.jvp(lambda o: f(z, o), (om,), (1.0,))[1])
  for omega_m in (0.3, 1.7, 8.0):
    h = 1e-6
    fd = (np.asarray(f(z, omega_m + h)) - np.asarray(f(z, omega_m - h))) / (2 * h)
    np.testing.assert_allclose(grad(omega_m, z), fd, rtol=1e-6, atol=atol)
    np.testing.assert_allclose(forward(omega_m), grad(omega_m, z), rtol=1e-12, atol=1e-15)
