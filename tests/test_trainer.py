"""The client's trainer does the same maths as the plain loop, only faster (bench/trainer.py measures it)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from clients import trainer
from fllocal import data, models


def plain_loop(model, x, y, epochs, lr, momentum, seed):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 50):
            idx = order[start:start + 50]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()


def test_channels_last_training_gives_the_plain_loops_weights_in_the_usual_layout():
    images, labels = data.load_raw("mnist")
    x, y = data.to_tensors("mnist", images[:500], labels[:500])
    ours, ref = models.build("cnn_mnist", seed=4), models.build("cnn_mnist", seed=4)
    trainer.train(ours, x, y, epochs=2, batch_size=50, lr=0.05, momentum=0.5, seed=9)
    plain_loop(ref, x, y, epochs=2, lr=0.05, momentum=0.5, seed=9)
    got, want = models.get_weights(ours), models.get_weights(ref)
    for name in want:
        assert got[name].flags["C_CONTIGUOUS"], name
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=name)
    assert all(p.is_contiguous() for p in ours.parameters())
