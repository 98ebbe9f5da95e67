"""Under torch.distributed every rank of a semidiscrete run holds rank 0's potentials, even
when the ranks' fits differ (2 gloo processes)."""

from __future__ import annotations

import os
import threading

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mfm_core.couplers import SemiDiscreteCoupler
from mfm_core.datasets.file import Points
from mfm_core.datasets.toy2d import Checkerboard, Gaussian
from mfm_core.protocols import PrepareContext

WORLD = 2
PARAMS = {"iterations": 40, "batch": 128, "check_draws": 512}


def _prepared(seed: int) -> SemiDiscreteCoupler:
    points = Checkerboard().sample(150, torch.Generator().manual_seed(1))
    coupler = SemiDiscreteCoupler(**PARAMS)
    generator = torch.Generator().manual_seed(seed)
    coupler.prepare(
        PrepareContext(source=Gaussian(shape=(2,)), target=Points(points), generator=generator)
    )
    return coupler


def _batch() -> torch.Tensor:
    return torch.randn(64, 2, generator=torch.Generator().manual_seed(4))


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {}
        # rank 1's generator seeded differently stands for a fit that is not deterministic
        for case, seed in (("alike", 0), ("planted", 0 if rank == 0 else 1)):
            coupler = _prepared(seed)
            x0 = _batch()
            coupling = coupler(x0, x0)
            results[case] = {"state": coupler.state_dict(), "j": coupling.j, "cost": coupling.cost}
            results[case]["seconds"] = coupler.report.seconds  # not saved: rank 0's, broadcast
        # A fit started from a thread other than the main one is refused before any collective.
        errors: list[BaseException] = []
        coupler = _prepared(0)

        def couple() -> None:
            try:
                coupler(_batch(), _batch())
            except RuntimeError as exc:
                errors.append(exc)

        thread = threading.Thread(target=couple)
        thread.start()
        thread.join()
        results["thread_error"] = str(errors[0]) if errors else None
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_worker, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def _assert_same(a: dict, b: dict) -> None:
    """The same potentials (bit for bit), generator, report and pairs."""
    assert a["state"]["potentials"].keys() == b["state"]["potentials"].keys()
    for key, g in a["state"]["potentials"].items():
        assert torch.equal(g, b["state"]["potentials"][key])
    assert torch.equal(a["state"]["generator"], b["state"]["generator"])
    assert a["state"]["report"] == b["state"]["report"]
    assert torch.equal(a["j"], b["j"]) and a["cost"] == b["cost"]


def test_ranks_fitting_alike_hold_the_same_potentials_and_pairs(ranks) -> None:
    _assert_same(ranks[0]["alike"], ranks[1]["alike"])
    assert ranks[0]["alike"]["seconds"] == ranks[1]["alike"]["seconds"]  # the whole report


def test_a_rank_whose_fit_differs_ends_with_rank_0s_potentials(ranks) -> None:
    _assert_same(ranks[0]["planted"], ranks[1]["planted"])
    # rank 0 kept its own fit: the one a single process makes from the same seed
    single = _prepared(0)
    x0 = _batch()
    alone = single(x0, x0)
    _assert_same(
        ranks[1]["planted"],
        {"state": single.state_dict(), "j": alone.j, "cost": alone.cost},
    )
    # and rank 1's own generator would have fitted other potentials
    other = _prepared(1)
    other(x0, x0)
    assert not torch.equal(
        other.state_dict()["potentials"][-2], single.state_dict()["potentials"][-2]
    )


def test_a_fit_in_a_background_thread_under_torchrun_is_refused(ranks) -> None:
    for rank in ranks:
        assert rank["thread_error"] is not None and "main thread" in rank["thread_error"]
