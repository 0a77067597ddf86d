import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from jax.sharding import PartitionSpec as P

from jaxrepro import mesh
from jaxrepro.testing import run_with_devices


def test_parse_mesh_spec():
  assert mesh.parse_mesh_spec("data=2,fsdp=4", 8) == {"data": 2, "fsdp": 4}
  assert mesh.parse_mesh_spec("fsdp=-1", 8) == {"data": 1, "fsdp": 8}
  assert mesh.parse_mesh_spec(None, 4) == {"data": 4, "fsdp": 1}
  with pytest.raises(ValueError, match="needs 6 devices"):
    mesh.parse_mesh_spec("data=2,fsdp=3", 8)
  with pytest.raises(ValueError, match="bad mesh spec"):
    mesh.parse_mesh_spec("model=8", 8)
  with pytest.raises(ValueError, match="not an integer"):
    mesh.parse_mesh_spec("data=x", 8)


def test_fsdp_rule_picks_largest_divisible_axis_and_replicates_small_leaves():
  assert mesh.fsdp_partition_spec((512, 1376), 4) == P(None, "fsdp")
  assert mesh.fsdp_partition_spec((1376, 6), 4) == P("fsdp", None)
  assert mesh.fsdp_partition_spec((1023, 5), 4) == P()  # nothing divisible
  assert mesh.fsdp_partition_spec((16,), 4) == P()      # too small to shard
  assert mesh.fsdp_partition_spec((4096,), 1) == P()    # no fsdp axis


def test_fsdp_train_step_matches_single_device():
  """A jitted MLP train step with FSDP-sharded params equals the single-device run."""
  out = run_with_devices("""
    import json, jax, jax.numpy as jnp, numpy as np, optax
    from jaxrepro import mesh as M

    def init(key):
      k1, k2 = jax.random.split(key)
      return {"w1": jax.random.normal(k1, (64, 256)) / 8, "b1": jnp.zeros(256),
              "w2": jax.random.normal(k2, (256, 8)) / 16}

    def loss_fn(p, x, y):
      h = jax.nn.gelu(x @ p["w1"] + p["b1"])
      return jnp.mean((h @ p["w2"] - y) ** 2)

    opt = optax.adam(1e-2)
    def step(p, s, x, y):
      loss, g = jax.value_and_grad(loss_fn)(p, x, y)
      u, s = opt.update(g, s, p)
      return optax.apply_updates(p, u), s, loss

    params = init(jax.random.PRNGKey(0))
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (32, 64)))
    y = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (32, 8)))

    def run(p, xs, ys, jitted):
      s = opt.init(p)
      losses = []
      for _ in range(5):
        p, s, loss = jitted(p, s, xs, ys)
        losses.append(float(loss))
      return losses, p

    single, _ = run(jax.device_put(params, jax.devices()[0]), x, y, jax.jit(step))
    m = M.make_mesh("data=2,fsdp=4")
    sharded_params = M.shard_fsdp(params, m, min_size_to_shard=1)
    assert sharded_params["w1"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")
    xs, ys = M.shard_batch((x, y), m)
    sharded, p_out = run(sharded_params, xs, ys, jax.jit(step))
    print(json.dumps({"single": single, "sharded": sharded, "n": jax.device_count(),
                      "w1_shards": len(p_out["w1"].addressable_shards)}))
  """)
  result = json.loads(out.strip().splitlines()[-1])
  assert result["n"] == 8 and result["w1_shards"] == 8
  assert result["single"][-1] < result["single"][0]
  for a, b in zip(result["single"], result["sharded"]):
    assert abs(a - b) <= 1e-5 * max(1.0, abs(a))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_all_reduce():
  """Two local processes joined by initialize_distributed all-reduce their values."""
  port = _free_port()
  worker = textwrap.dedent("""
    import json, os, sys
    from jaxrepro.mesh import initialize_distributed
    assert initialize_distributed()
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    pid = jax.process_index()
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("proc",))
    local = jax.device_put(np.array([10.0 * (pid + 1)], np.float32), jax.local_devices()[0])
    global_x = jax.make_array_from_single_device_arrays(
        (jax.device_count(),), NamedSharding(mesh, P("proc")), [local])
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(global_x)
    print(json.dumps({"pid": pid, "count": jax.process_count(),
                      "sum": float(total.addressable_data(0))}))
    jax.distributed.shutdown()
  """)
  procs = []
  for pid in range(2):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAXREPRO_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAXREPRO_NUM_PROCESSES="2", JAXREPRO_PROCESS_ID=str(pid))
    env.pop("XLA_FLAGS", None)
    procs.append(subprocess.Popen([sys.executable, "-c", worker], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  results = []
  for p in procs:
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err[-4000:]
    results.append(json.loads(out.strip().splitlines()[-1]))
  assert sorted(r["pid"] for r in results) == [0, 1]
  for r in results:
    assert r["count"] == 2
    assert r["sum"] == pytest.approx(30.0)


def test_initialize_distributed_single_process_is_a_no_op(monkeypatch):
  for var in (mesh.ENV_COORDINATOR, mesh.ENV_NUM_PROCESSES, mesh.ENV_PROCESS_ID):
    monkeypatch.delenv(var, raising=False)
  assert mesh.initialize_distributed() is False
  with pytest.raises(ValueError, match="process id"):
    mesh.initialize_distributed("127.0.0.1:1", num_processes=2, process_id=5)
