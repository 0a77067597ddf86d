import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepro.checkpoint import Checkpointer, tree_equal_bitwise
from jaxrepro.testing import run_with_devices


def _state(seed=0):
  key = jax.random.PRNGKey(seed)
  return {
      "int8": jax.random.randint(key, (17, 5), -128, 127, dtype=jnp.int8),
      "uint8": jax.random.randint(key, (33,), 0, 255, dtype=jnp.int32).astype(jnp.uint8),
      "bf16": jax.random.normal(key, (4, 9), dtype=jnp.bfloat16),
      "f32": jax.random.normal(jax.random.fold_in(key, 1), (3, 3)),
      "step": jnp.int32(41),
      "key": jax.random.key(seed + 7),
      "nested": (jnp.arange(4.0), {"count": jnp.zeros((), jnp.uint32)}),
  }


def test_round_trip_is_bit_exact_for_all_dtypes(tmp_path):
  state = _state()
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    assert ckpt.save(3, state, extra={"epoch": 2, "order": [3, 1, 2]})
    restored, extra = ckpt.restore(jax.eval_shape(lambda: state))
  assert tree_equal_bitwise(restored, state)
  assert extra == {"epoch": 2, "order": [3, 1, 2]}
  assert restored["bf16"].dtype == jnp.bfloat16
  # the restored typed key continues the same random stream
  assert jnp.array_equal(jax.random.normal(restored["key"], (5,)),
                         jax.random.normal(state["key"], (5,)))


def test_bitwise_comparison_detects_a_flipped_bit():
  state = _state()
  other = dict(state, int8=state["int8"].at[0, 0].add(1))
  assert not tree_equal_bitwise(state, other)


def test_save_every_keep_and_restore_step(tmp_path):
  with Checkpointer(tmp_path, save_every=5, keep=2) as ckpt:
    saved = [s for s in range(0, 21) if ckpt.save(s, {"x": jnp.float32(s)})]
    ckpt.wait()
    assert saved == [0, 5, 10, 15, 20]
    assert ckpt.all_steps() == [15, 20]
    assert ckpt.latest_step() == 20
    restored, _ = ckpt.restore({"x": jnp.float32(0)}, step=15)
    assert float(restored["x"]) == 15.0
    with pytest.raises(FileNotFoundError, match="step 5"):
      ckpt.restore({"x": jnp.float32(0)}, step=5)


def test_restore_from_empty_directory_is_a_clear_error(tmp_path):
  with Checkpointer(tmp_path) as ckpt, pytest.raises(FileNotFoundError, match="no checkpoint"):
    ckpt.restore({"x": jnp.zeros(2)})


def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path):
  """Kill the saving process mid-write; the earlier step must still restore bit-exactly."""
  script = textwrap.dedent(f"""
    import sys, jax, jax.numpy as jnp
    from jaxrepro.checkpoint import Checkpointer
    ckpt = Checkpointer({str(tmp_path)!r}, keep=5)
    small = {{"w": jnp.arange(1000, dtype=jnp.float32), "k": jax.random.PRNGKey(1)}}
    ckpt.save(1, small); ckpt.wait()
    print("saved-1", flush=True)
    big = {{"w": jnp.arange(1000, dtype=jnp.float32), "k": jax.random.PRNGKey(1),
            "big": [jnp.full((16, 1024, 1024), i, jnp.float32) for i in range(24)]}}
    print("saving-2", flush=True)
    ckpt.save(2, big)
    ckpt.wait()
    print("saved-2", flush=True)
  """)
  proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  lines = []
  for line in proc.stdout:
    lines.append(line.strip())
    if line.startswith("saving-2"):
      # kill as soon as orbax's temporary directory for step 2 exists: mid-write
      deadline = time.monotonic() + 60
      while not any("tmp" in p.name for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline, "no temporary checkpoint directory appeared"
        time.sleep(0.005)
      proc.send_signal(signal.SIGKILL)
      break
  proc.wait(timeout=60)
  assert "saved-2" not in lines, "save finished before the kill; the test did not test anything"
  leftovers = [p.name for p in tmp_path.iterdir()]
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() == 1, leftovers
    restored, _ = ckpt.restore({"w": jnp.zeros(1000, jnp.float32),
                                "k": jax.random.PRNGKey(0)})
  assert np.array_equal(np.asarray(restored["w"]), np.arange(1000, dtype=np.float32))
  assert np.array_equal(np.asarray(restored["k"]), np.asarray(jax.random.PRNGKey(1)))


def test_sharded_arrays_round_trip_into_target_sharding(tmp_path):
  out = run_with_devices(f"""
    import json, jax, jax.numpy as jnp, numpy as np
    from jaxrepro import mesh as M
    from jaxrepro.checkpoint import Checkpointer, tree_equal_bitwise
    m = M.make_mesh("data=2,fsdp=4")
    state = M.shard_fsdp({{"w": jnp.arange(64 * 32, dtype=jnp.float32).reshape(64, 32),
                          "q": jnp.arange(256, dtype=jnp.int8).reshape(8, 32)}}, m,
                         min_size_to_shard=1)
    with Checkpointer({str(tmp_path)!r}) as ckpt:
      ckpt.save(0, state)
      abstract = jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
      restored, _ = ckpt.restore(abstract)
    print(json.dumps({{"equal": tree_equal_bitwise(restored, state),
                      "spec": str(restored["w"].sharding.spec),
                      "same": restored["w"].sharding == state["w"].sharding}}))
  """)
  result = json.loads(out.strip().splitlines()[-1])
  assert result == {"equal": True, "spec": result["spec"], "same": True}
  assert "fsdp" in result["spec"]
