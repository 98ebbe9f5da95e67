"""The pair feed alone: micro-batches cut from coupled batches, the same pairs with and without
the background thread, a state that continues exactly, and its coupling times."""

from __future__ import annotations

import torch

from mfm_core.protocols import Coupling
from mfm_core.runner.training.data import SampledStream
from mfm_core.runner.training.feed import PairFeed
from mfm_core.runner.training.sizes import BatchSizes


class Noise:
    shape = (2,)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, 2, generator=generator)


class Reversing:
    """Pairs noise i with data k - 1 - i: an order the feed must keep."""

    draws_global_rng = False

    def __call__(self, x0, x1, cond=None) -> Coupling:
        k = len(x0)
        return Coupling(i=torch.arange(k), j=torch.arange(k - 1, -1, -1), is_permutation=True)


def feed(
    overlap: bool, *, coupling: int = 8, micro: int = 4, per_rank: int = 4, seed: int = 0
) -> PairFeed:
    """A feed of ``per_rank`` pairs per step; a coupled batch larger than that is shuffled."""
    generator = torch.Generator().manual_seed(seed)
    return PairFeed(
        source=Noise(),
        coupler=Reversing(),
        stream=SampledStream(Noise(), coupling, generator),
        generator=generator,
        sizes=BatchSizes(per_rank=per_rank, micro=micro, coupling=coupling),
        device=torch.device("cpu"),
        conditional=False,
        overlap=overlap,
    )


def draw(pairs_feed: PairFeed, count: int, total: int) -> list[torch.Tensor]:
    """``count`` micro-batches of a run of ``total``, as (x0, x1) stacked."""
    out = []
    for index in range(count):
        x0, x1, _ = pairs_feed.micro_batch(needed=total - index)
        out.append(torch.stack([x0, x1]))
    return out


def test_micro_batches_cut_one_coupled_batch_in_order():
    plain = feed(False, coupling=4, micro=2, per_rank=4)  # one step's batch: not shuffled
    plain.start()
    first, second = draw(plain, 2, 2)
    again = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(4, 2, generator=again), torch.randn(4, 2, generator=again)
    torch.testing.assert_close(torch.cat([first, second], 1), torch.stack([x0, x1.flip(0)]))
    plain.close(keep_ahead=True)


def test_the_background_thread_gives_the_same_pairs():
    with_thread, without = feed(True), feed(False)
    for f in (with_thread, without):
        f.start()
    a, b = draw(with_thread, 9, 9), draw(without, 9, 9)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    with_thread.close(keep_ahead=True)
    without.close(keep_ahead=True)


def test_a_saved_feed_continues_exactly_with_the_batch_coupled_ahead():
    whole = feed(True)
    whole.start()
    reference = draw(whole, 10, 10)
    part = feed(True)
    part.start()
    draw(part, 3, 10)  # mid-batch, with the next batch coupled ahead in the thread
    state = part.state_dict()
    part.close(keep_ahead=True)
    assert state["pairs"] is not None and state["next_pairs"] is not None
    resumed = feed(True, seed=99)  # another seed: everything must come from the state
    resumed.load_state_dict(state)
    resumed.start()
    for x, y in zip(draw(resumed, 7, 7), reference[3:], strict=True):
        assert torch.equal(x, y)
    resumed.close(keep_ahead=True)


def test_coupling_times_count_batches_and_waiting():
    plain = feed(False, coupling=8, micro=4)
    plain.start()
    draw(plain, 4, 4)
    assert plain.times.batches == 2
    assert plain.times.waited >= plain.times.coupling > 0  # without the thread, all is waited
