"""InfoNCE on several processes: every rank's queries meet every rank's keys.

Two processes on the CPU (gloo)::

    torchrun --standalone --nproc-per-node 2 docs/examples/distributed_infonce.py

Each rank encodes its share of the batch with the same model
(``DistributedDataParallel``), whose loss module,
``InfoNCELoss(gather=True)``, gathers the keys of every rank and returns
this rank's queries' share of the loss of the whole batch: ``W / N`` times
the sum of their losses, for ``W`` ranks and ``N`` queries in all. The mean
of the ranks' values is then the loss of the whole batch, and once DDP has
averaged the gradients every rank holds its gradient, the learned
temperature's included (the loss module is part of the model, so DDP
averages its parameter too). The ranks' shares may differ in size (4 and 3
rows here, 1 and 1 in the last batch). At the end the script checks one more
step against a single process that sees the whole batch.
"""

import copy
import datetime

import torch
import torch.distributed as dist

import cosinekit as ck
from cosinekit.torch import InfoNCELoss


class Model(torch.nn.Module):
    """An encoder and its loss, with a learned temperature: one module for DDP."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(16, 8)
        self.loss = InfoNCELoss(temperature=0.1, learn_temperature=True, gather=True)
        self.double()

    def forward(self, images, noise):
        """The share of this rank's images in the loss: two noisy views of each."""
        return self.loss(*views(self.encoder, images, noise))


def views(encoder, images, noise):
    """Queries and keys: two noisy views of each image, in one forward pass."""
    return encoder(torch.cat([images + noise[0], images + noise[1]])).chunk(2)


def my_rows(batch, noise):
    """Every rank holds the whole batch here (same seed) and keeps its rows."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    mine = torch.arange(len(batch)).tensor_split(world_size)[rank]
    return batch[mine], noise[:, mine]


def main():
    """A few training steps, then the check against one process."""
    # A rank that dies makes the others fail after a minute, not hang.
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    world_size = dist.get_world_size()
    torch.manual_seed(0)  # the same model and data on every rank
    model = Model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.5)
    for batch in torch.randn(30, 16, dtype=torch.float64).split(7):  # 7, 7, 7, 7, 2
        noise = 0.3 * torch.randn(2, *batch.shape, dtype=torch.float64)
        loss = ddp(*my_rows(batch, noise))
        optimizer.zero_grad()
        loss.backward()  # DDP averages the gradients over the ranks
        optimizer.step()

    # One more batch, against one process that sees all of it.
    batch = torch.randn(7, 16, dtype=torch.float64)
    noise = 0.3 * torch.randn(2, 7, 16, dtype=torch.float64)
    single_model = copy.deepcopy(model)
    temperature = torch.exp(-single_model.loss.log_inverse_temperature)
    single = ck.info_nce_loss(*views(single_model.encoder, batch, noise), temperature=temperature)
    single.backward()
    loss = ddp(*my_rows(batch, noise))
    optimizer.zero_grad()
    loss.backward()
    mean = loss.detach().clone()
    dist.all_reduce(mean)
    assert torch.allclose(mean / world_size, single, rtol=1e-12, atol=0)
    for ours, theirs in zip(model.parameters(), single_model.parameters(), strict=True):
        assert torch.allclose(ours.grad, theirs.grad, rtol=1e-10, atol=1e-14)
    if dist.get_rank() == 0:
        print(f"{world_size} ranks: the loss ({single.item():.6f}) and gradient of one process")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
