import os

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

# The suite runs as two pytest-xdist workers on two cores: one thread each avoids
# oversubscription, which made small training loops 10-20x slower here.
torch.set_num_threads(1)

import math  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def check_bfloat16_update():
    """One update of an agent built with precision="bfloat16" (its twin `fp32` built the same way
    in float32): the encoder runs in bf16, every parameter of the modules in `moved` changes and
    stays fp32, the metrics are finite, and the checkpoint loads into the fp32 agent."""

    def check(fp32, bf16, batch, step, moved):
        assert bf16.encoder.compute_dtype is torch.bfloat16 and fp32.encoder.compute_dtype is torch.float32
        before = {name: {k: p.detach().clone() for k, p in bf16.modules()[name].named_parameters()}
                  for name in moved}
        metrics = bf16.update(batch, step)
        assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics
        for name in moved:
            for key, p in bf16.modules()[name].named_parameters():
                assert p.dtype == torch.float32 and not torch.equal(before[name][key], p), (name, key)
        fp32.load_state_dict(bf16.state_dict())  # checkpoints do not depend on the precision

    return check
