"""scope = "global" over 2 gloo processes equals one process solving the whole batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mfm_core import create

WORLD = 2
K = 12  # samples per rank


def _batch(rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + rank)
    x0 = torch.randn(K, 2, generator=gen)
    x1 = torch.randn(K, 2, generator=gen) * 2 + 1
    return x0, x1, torch.randint(0, 3, (K,), generator=gen)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name in ("exact", "stable", "heuristic", "independent"):
            for labelled in (False, True):
                x0, x1, cond = _batch(rank)
                coupler = create("coupler", name, scope="global")
                torch.manual_seed(7)  # only rank 0's random state matters
                coupling = coupler(x0, x1, cond if labelled else None)
                paired = coupling.pairs(x0, x1, cond if labelled else None)
                results[(name, labelled)] = (coupling.i, coupling.j, paired, coupling.cost)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_global_scope_equals_the_single_process_solve(tmp_path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    batches = [_batch(r) for r in range(WORLD)]
    x0 = torch.cat([b[0] for b in batches])
    x1 = torch.cat([b[1] for b in batches])
    cond = torch.cat([b[2] for b in batches])
    for name in ("exact", "stable", "heuristic", "independent"):
        for labelled in (False, True):
            torch.manual_seed(7)
            single = create("coupler", name)(x0, x1, cond if labelled else None)
            shares = [r[(name, labelled)] for r in ranks]
            assert torch.equal(torch.cat([s[0] for s in shares]), single.i), name
            assert torch.equal(torch.cat([s[1] for s in shares]), single.j), name
            assert all(len(s[0]) == K for s in shares)  # an equal share for every rank
            for s in shares:  # each rank trains on its own pairs of the whole batch
                assert torch.equal(s[2][0], x0[s[0]]) and torch.equal(s[2][1], x1[s[1]])
                if labelled:
                    assert torch.equal(s[2][2], cond[s[1]])
                    assert (cond[s[0]] == cond[s[1]]).all()
            if single.cost is not None:
                assert shares[0][3] == pytest.approx(single.cost) == shares[1][3]


def test_global_scope_without_a_process_group_is_local() -> None:
    x0, x1, _ = _batch(0)
    local = create("coupler", "exact")(x0, x1)
    coupling = create("coupler", "exact", scope="global")(x0, x1)
    assert torch.equal(coupling.j, local.j) and coupling.samples is None
