"""InfoNCE on several processes: every rank's queries meet every rank's keys.

Two processes on the CPU (gloo)::

    torchrun --standalone --nproc-per-node 2 docs/examples/distributed_infonce.py

Each rank encodes its share of the batch with the same model
(``DistributedDataParallel``), gathers the keys of every rank with
``cosinekit.torch.all_gather``, and returns its queries' share of the loss of
the whole batch: ``W / N`` times the sum of their losses, for ``W`` ranks and
``N`` queries in all. The mean of the ranks' values is then the loss of the
whole batch, and once DDP has averaged the gradients every rank holds its
gradient. The ranks' shares may differ in size (4 and 3 rows here, 1 and 1
in the last batch). At the end the script checks one more step against a
single process that sees the whole batch.
"""

import copy

import torch
import torch.distributed as dist

import cosinekit as ck
from cosinekit.torch import all_gather

TEMPERATURE = 0.1


def info_nce_share(queries, keys):
    """The share of this rank's queries in the InfoNCE loss of every rank's rows."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    counts = all_gather(torch.tensor([queries.shape[0]]))
    every_key = all_gather(keys)
    # The positive of this rank's i-th query is its i-th key, which follows
    # the keys of the ranks before it.
    labels = int(counts[:rank].sum()) + torch.arange(queries.shape[0])
    total = ck.info_nce_loss(
        queries, every_key, temperature=TEMPERATURE, labels=labels, reduction="sum"
    )
    return total * world_size / counts.sum()


def views(model, images, noise):
    """Queries and keys: two noisy views of each image, in one forward pass."""
    return model(torch.cat([images + noise[0], images + noise[1]])).chunk(2)


def loss_of_my_share(ddp, batch, noise):
    """Every rank holds the whole batch here (same seed) and keeps its rows."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    mine = torch.arange(len(batch)).tensor_split(world_size)[rank]
    return info_nce_share(*views(ddp, batch[mine], noise[:, mine]))


def main():
    """A few training steps, then the check against one process."""
    dist.init_process_group("gloo")
    world_size = dist.get_world_size()
    torch.manual_seed(0)  # the same model and data on every rank
    model = torch.nn.Linear(16, 8, dtype=torch.float64)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.5)
    for batch in torch.randn(30, 16, dtype=torch.float64).split(7):  # 7, 7, 7, 7, 2
        noise = 0.3 * torch.randn(2, *batch.shape, dtype=torch.float64)
        loss = loss_of_my_share(ddp, batch, noise)
        optimizer.zero_grad()
        loss.backward()  # DDP averages the gradients over the ranks
        optimizer.step()

    # One more batch, against one process that sees all of it.
    batch = torch.randn(7, 16, dtype=torch.float64)
    noise = 0.3 * torch.randn(2, 7, 16, dtype=torch.float64)
    single_model = copy.deepcopy(model)
    single = ck.info_nce_loss(*views(single_model, batch, noise), temperature=TEMPERATURE)
    single.backward()
    loss = loss_of_my_share(ddp, batch, noise)
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
