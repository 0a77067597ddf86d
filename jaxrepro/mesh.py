"""Device mesh with ``data`` and ``fsdp`` axes, FSDP-style sharding rules, and multi-host
start-up through ``jax.distributed``.

Batches are split over both axes (every device sees a distinct slice of the batch);
parameters and optimizer state are split along their largest dimension divisible by the
``fsdp`` axis size and replicated over ``data`` (ZeRO-3 / FSDP). Leaves too small to be
worth splitting, or with no divisible dimension, are replicated.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp")
BATCH_AXES = AXES  # the batch dimension is split over every device

log = logging.getLogger(__name__)


def parse_mesh_spec(spec: str | Mapping[str, int] | None, n_devices: int) -> dict[str, int]:
  """Parses ``"data=2,fsdp=4"`` into axis sizes whose product is ``n_devices``.

  Missing axes default to 1, except that when ``spec`` is None all devices go to ``data``.
  One axis may be ``-1`` ("the rest").
  """
  if spec is None:
    sizes = {"data": n_devices, "fsdp": 1}
  else:
    if isinstance(spec, str):
      sizes = {}
      for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in AXES:
          raise ValueError(f"bad mesh spec {spec!r}: expected e.g. 'data=2,fsdp=4' with axes {AXES}")
        try:
          sizes[name.strip()] = int(value)
        except ValueError:
          raise ValueError(f"bad mesh spec {spec!r}: {value!r} is not an integer") from None
    else:
      sizes = dict(spec)
    unknown = set(sizes) - set(AXES)
    if unknown:
      raise ValueError(f"unknown mesh axes {sorted(unknown)}; allowed: {AXES}")
    sizes = {axis: sizes.get(axis, 1) for axis in AXES}
    rest = [a for a, s in sizes.items() if s == -1]
    if len(rest) > 1:
      raise ValueError(f"bad mesh spec {spec!r}: only one axis may be -1")
    known = math.prod(s for s in sizes.values() if s != -1)
    if rest:
      if n_devices % known:
        raise ValueError(f"mesh spec {spec!r}: {n_devices} devices not divisible by {known}")
      sizes[rest[0]] = n_devices // known
    if any(s < 1 for s in sizes.values()):
      raise ValueError(f"bad mesh spec {spec!r}: axis sizes must be positive")
  if math.prod(sizes.values()) != n_devices:
    raise ValueError(f"mesh {sizes} needs {math.prod(sizes.values())} devices, "
                     f"but {n_devices} are available")
  return sizes


def make_mesh(spec: str | Mapping[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ``Mesh`` over ``devices`` (default: all, across processes) with axes (data, fsdp)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = parse_mesh_spec(spec, len(devices))
  grid = np.asarray(devices, dtype=object).reshape(tuple(sizes[a] for a in AXES))
  return Mesh(grid, AXES)


def fsdp_partition_spec(shape: Sequence[int], fsdp_size: int,
                        min_size_to_shard: int = 2 ** 10) -> P:
  """Rule: shard the largest dimension divisible by ``fsdp_size``; else replicate."""
  if fsdp_size <= 1 or math.prod(shape) < min_size_to_shard:
    return P()
  candidates = [(size, i) for i, size in enumerate(shape) if size % fsdp_size == 0]
  if not candidates:
    return P()
  _, axis = max(candidates)  # ties: the later axis, i.e. a kernel's output dimension
  spec = [None] * len(shape)
  spec[axis] = "fsdp"
  return P(*spec)


def fsdp_shardings(tree: Any, mesh: Mesh, min_size_to_shard: int = 2 ** 10) -> Any:
  """A pytree of ``NamedSharding`` for ``tree`` (arrays or ShapeDtypeStructs) by the FSDP rule."""
  fsdp_size = mesh.shape["fsdp"]

  def rule(leaf):
    shape = getattr(leaf, "shape", ())
    return NamedSharding(mesh, fsdp_partition_spec(shape, fsdp_size, min_size_to_shard))
  return jax.tree.map(rule, tree)


def shard_fsdp(tree: Any, mesh: Mesh, min_size_to_shard: int = 2 ** 10) -> Any:
  """Places ``tree`` on ``mesh`` by the FSDP rule."""
  return jax.device_put(tree, fsdp_shardings(tree, mesh, min_size_to_shard))


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Sharding for an array whose leading dimension is the batch, split over all devices."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Places a (host-local, single-process) batch pytree split along its leading dimension."""
  n = mesh.size
  def put(x):
    x = np.asarray(x)
    if x.shape[0] % n:
      raise ValueError(f"batch dimension {x.shape[0]} is not divisible by the {n} devices "
                       f"of the mesh {dict(mesh.shape)}")
    return jax.device_put(x, batch_sharding(mesh, x.ndim))
  return jax.tree.map(put, batch)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


ENV_COORDINATOR = "JAXREPRO_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAXREPRO_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXREPRO_PROCESS_ID"


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None,
                           local_device_ids: Sequence[int] | None = None,
                           initialization_timeout: int = 120) -> bool:
  """Joins a multi-process JAX job; returns True when ``jax.distributed`` was initialized.

  Values come from the arguments, else from ``$JAXREPRO_COORDINATOR_ADDRESS``,
  ``$JAXREPRO_NUM_PROCESSES`` and ``$JAXREPRO_PROCESS_ID``; with none of them set (and no
  cluster auto-detection wanted) this is a single-process run and nothing is done.
  Must be called before any JAX computation. CPU collectives use gloo, so a job of CPU
  processes can all-reduce across hosts; that setting does not affect GPU/TPU backends.
  """
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR)
  if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
    num_processes = int(os.environ[ENV_NUM_PROCESSES])
  if process_id is None and os.environ.get(ENV_PROCESS_ID):
    process_id = int(os.environ[ENV_PROCESS_ID])
  if coordinator_address is None and num_processes in (None, 1):
    return False
  if coordinator_address is None or num_processes is None or process_id is None:
    raise ValueError("multi-process run needs coordinator address, process count and process id "
                     f"(arguments or ${ENV_COORDINATOR}, ${ENV_NUM_PROCESSES}, ${ENV_PROCESS_ID})")
  if not 0 <= process_id < num_processes:
    raise ValueError(f"process id {process_id} outside [0, {num_processes})")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id,
                             local_device_ids=local_device_ids,
                             initialization_timeout=initialization_timeout)
  log.info("joined %s as process %d of %d", coordinator_address, process_id, num_processes)
  return True
