import os

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

# The suite runs as two pytest-xdist workers on two cores: one thread each avoids
# oversubscription, which made small training loops 10-20x slower here.
torch.set_num_threads(1)
