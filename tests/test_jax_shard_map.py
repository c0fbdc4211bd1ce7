"""InfoNCE under ``jax.shard_map`` on 4 host devices equals the loss of the whole batch.

Each device scores its queries against the keys gathered from every device
(``all_gather(tiled=True)``), its positives starting at its own offset, and
``pmean`` averages the devices' means. The devices need
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before JAX starts, so
the check runs in a fresh interpreter; it prints the values and gradients
of both forms, compared here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cosinekit as ck

pytestmark = pytest.mark.backends("jax")

#: How a device names the positives of its ``n`` queries among the gathered keys.
POSITIVES = 'labels=jax.lax.axis_index("batch") * n + jnp.arange(n)'

SCRIPT = """
import json
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import cosinekit as ck

jax.config.update("jax_enable_x64", True)
assert jax.device_count() == 4, jax.devices()
mesh = jax.make_mesh((4,), ("batch",))
rng = np.random.default_rng(0)
queries, keys = (jnp.asarray(rng.standard_normal((12, 6))) for _ in range(2))
temperature = jnp.asarray(0.3)

def local_loss(q, k, t):
    n = q.shape[0]
    every_key = jax.lax.all_gather(k, "batch", tiled=True)
    loss = ck.info_nce_loss(q, every_key, temperature=t, {positives})
    return jax.lax.pmean(loss, "batch")

sharded = jax.shard_map(
    local_loss, mesh=mesh, in_specs=(P("batch"), P("batch"), P()), out_specs=P()
)
on_mesh = [
    jax.device_put(a, NamedSharding(mesh, spec))
    for a, spec in ((queries, P("batch")), (keys, P("batch")), (temperature, P()))
]
def single(q, k, t):
    return ck.info_nce_loss(q, k, temperature=t)

results = {{}}
whole = (queries, keys, temperature)
for name, f, args in (("sharded", sharded, on_mesh), ("single", single, whole)):
    value, grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(*args)
    results[name] = [np.asarray(a).tolist() for a in (value, *grads)]
print(json.dumps(results))
"""


def test_shard_map_equals_the_whole_batch() -> None:
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "PYTHONPATH": str(Path(ck.__file__).parent.parent),
        "JAX_PLATFORMS": "cpu",
    }
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(positives=POSITIVES)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.splitlines()[-1])
    sharded, single = results["sharded"], results["single"]
    for name, ours, theirs in zip(("value", "queries", "keys", "t"), sharded, single, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12, err_msg=name)
