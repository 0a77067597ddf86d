"""Orbax checkpoints: save every N steps, keep K, restore the latest (or a given) step.

Saves are atomic: orbax writes into a temporary directory and renames it only once the
write is complete, so a process killed mid-save (SIGKILL included) leaves the previous
checkpoint restorable and the partial one invisible. Sharded ``jax.Array`` leaves are
written shard by shard and restored into the sharding of the target.

Typed PRNG keys (``jax.random.key``) are stored as their raw key data and re-wrapped on
restore, so RNG streams resume bit-exactly. A JSON-able ``extra`` dict (data-loader
position, config, ...) can travel with each checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

_STATE = "state"
_EXTRA = "extra"


def _is_typed_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_typed_key(x) else x, tree)


def _default_sharding(x: Any) -> jax.sharding.Sharding:
  sharding = getattr(x, "sharding", None)
  if isinstance(sharding, jax.sharding.Sharding):
    return sharding
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def abstract_target(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) describing ``tree``, typed keys as raw key data.

  Accepts concrete arrays or the output of ``jax.eval_shape``; leaves without a sharding
  are placed on the first local device.
  """
  def leaf(x):
    if _is_typed_key(x):
      data = jax.eval_shape(jax.random.key_data, x)
      return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=_default_sharding(x))
    if hasattr(x, "shape") and hasattr(x, "dtype"):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=_default_sharding(x))
    return x
  return jax.tree.map(leaf, tree)


def _rewrap_keys(restored: Any, target: Any) -> Any:
  def leaf(value, like):
    if _is_typed_key(like):
      return jax.random.wrap_key_data(value, impl=jax.random.key_impl(like)
                                      if isinstance(like, jax.Array) else None)
    return value
  return jax.tree.map(leaf, restored, target)


class Checkpointer:
  """A thin wrapper over ``orbax.checkpoint.CheckpointManager``.

  >>> ckpt = Checkpointer("/tmp/run", save_every=100, keep=3)
  >>> ckpt.save(step, state)            # no-op unless step % save_every == 0
  >>> state, extra = ckpt.restore(like=state)   # latest step
  """

  def __init__(self, directory: str | os.PathLike, *, save_every: int = 1, keep: int | None = 3,
               async_save: bool = True):
    if save_every < 1:
      raise ValueError(f"save_every must be >= 1, got {save_every}")
    if keep is not None and keep < 1:
      raise ValueError(f"keep must be >= 1 or None, got {keep}")
    self.directory = Path(directory).absolute()
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=(_STATE, _EXTRA))

  def should_save(self, step: int) -> bool:
    return step % self.save_every == 0

  def save(self, step: int, state: Any, *, extra: dict | None = None,
           force: bool = False) -> bool:
    """Saves ``state`` at ``step`` when due (or ``force``); returns whether it saved."""
    if not (force or self.should_save(step)):
      return False
    if step in self.all_steps():
      return False
    args = {_STATE: ocp.args.StandardSave(_keys_to_data(state))}
    args[_EXTRA] = ocp.args.JsonSave(extra if extra is not None else {})
    return bool(self._manager.save(step, args=ocp.args.Composite(**args), force=True))

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores ``(state, extra)`` at ``step`` (default: latest) into the structure,
    dtypes and shardings of ``like`` (concrete arrays or ``jax.eval_shape`` output).

    Raises ``FileNotFoundError`` when there is no checkpoint to restore.
    """
    self.wait()
    step = self.latest_step() if step is None else step
    if step is None or step not in self.all_steps():
      raise FileNotFoundError(f"no checkpoint{'' if step is None else f' at step {step}'} "
                              f"in {self.directory} (have {self.all_steps()})")
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        _STATE: ocp.args.StandardRestore(abstract_target(like)),
        _EXTRA: ocp.args.JsonRestore(),
    }))
    state = _rewrap_keys(restored[_STATE], like)
    return state, dict(restored[_EXTRA] or {})

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def tree_equal_bitwise(a: Any, b: Any) -> bool:
  """True when two pytrees have the same structure, dtypes, shapes and bits."""
  la, ta = jax.tree.flatten(_keys_to_data(a))
  lb, tb = jax.tree.flatten(_keys_to_data(b))
  if ta != tb:
    return False
  for x, y in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != y.dtype or x.shape != y.shape:
      return False
    if x.tobytes() != y.tobytes():
      return False
  return True
