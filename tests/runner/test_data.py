"""The training data stream: epoch permutations, disjoint shards per process, exact resume
without reading the skipped samples, loader workers, flips."""

from __future__ import annotations

import torch
from tiny_plugin import TinyImages

from mfm_core.runner.training.data import EpochBatches, IndexedStream


class CountingImages(TinyImages):
    """Remembers which items were read (in this process: no loader workers)."""

    def __init__(self, **kwargs):
        super().__init__(root="", **kwargs)
        self.read: list[int] = []

    def __getitem__(self, index):
        self.read.append(index)
        return super().__getitem__(index)


def take(batches, count):
    iterator = iter(batches)
    return [next(iterator) for _ in range(count)]


def test_shards_of_the_processes_are_disjoint_and_each_epoch_is_a_new_permutation():
    n, batch, world = 103, 5, 3
    per_epoch = (n // world) // batch  # 34 per process: 6 batches, 4 left over
    shards = [
        take(EpochBatches(n, batch, 7, rank, world, (0, 0)), 2 * per_epoch) for rank in range(3)
    ]
    for epoch in range(2):
        seen = [sum(s[epoch * per_epoch : (epoch + 1) * per_epoch], []) for s in shards]
        flat = sum(seen, [])
        assert len(flat) == len(set(flat)) == world * per_epoch * batch  # disjoint, no repeats
        assert all(0 <= i < n for i in flat)
    first = sum(shards[0][:per_epoch], [])
    second = sum(shards[0][per_epoch:], [])
    assert first != second
    again = take(EpochBatches(n, batch, 7, 0, world, (0, 0)), 2 * per_epoch)
    assert again == shards[0]  # from the seed alone
    assert take(EpochBatches(n, batch, 8, 0, world, (0, 0)), 1) != shards[0][:1]


def test_a_stream_started_at_a_position_continues_where_another_left_off():
    batches = EpochBatches(40, 4, 1, 0, 1, (0, 0))
    whole = take(batches, 25)  # 10 per epoch
    assert take(EpochBatches(40, 4, 1, 0, 1, (1, 3)), 12) == whole[13:]


def test_resumed_stream_gives_the_same_batches_and_flips_without_reading_skipped_items():
    options = {"seed": 2, "rank": 0, "world_size": 1, "workers": 0, "pin_memory": False}
    first = IndexedStream(CountingImages(size=48), 8, **options)
    whole = [first.next() for _ in range(9)]  # 6 batches per epoch
    resumed_from = IndexedStream(CountingImages(size=48), 8, **options)
    for _ in range(4):
        resumed_from.next()
    state = resumed_from.state()
    assert state["position"] == [0, 4]
    dataset = CountingImages(size=48)
    stream = IndexedStream(dataset, 8, **options)
    stream.load_state(state)
    rest = [stream.next() for _ in range(5)]
    assert len(dataset.read) == 5 * 8  # nothing of the first four batches was read
    for (a, la), (b, lb) in zip(whole[4:], rest, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_flips_are_drawn_from_the_streams_own_generator_and_labels_come_along():
    options = {"seed": 2, "rank": 0, "world_size": 1, "workers": 0, "pin_memory": False}
    dataset = CountingImages(size=16)
    flipped = IndexedStream(dataset, 16, **options).next()
    plain = IndexedStream(CountingImages(size=16, hflip=False), 16, **options).next()
    order = list(dataset.read)
    images = torch.stack([dataset[i][0] for i in order])
    assert torch.equal(plain[0], images)
    same = (flipped[0] == images).flatten(1).all(1)
    mirrored = (flipped[0] == images.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()
    assert flipped[1].tolist() == [i % 4 for i in order]


def test_loader_workers_give_the_same_batches():
    options = {"seed": 4, "rank": 1, "world_size": 2, "pin_memory": False}
    serial = IndexedStream(TinyImages(root="", size=40), 4, workers=0, **options)
    parallel = IndexedStream(TinyImages(root="", size=40), 4, workers=2, **options)
    for _ in range(7):  # 5 batches an epoch per process: crosses into the second epoch
        (a, la), (b, lb) = serial.next(), parallel.next()
        assert torch.equal(a, b) and torch.equal(la, lb)
    parallel.close()


def test_starting_the_loader_takes_no_batch():
    options = {"seed": 4, "rank": 0, "world_size": 1, "pin_memory": False}
    plain = IndexedStream(TinyImages(root="", size=40), 4, workers=0, **options)
    started = IndexedStream(TinyImages(root="", size=40), 4, workers=1, **options)
    started.start()
    started.start()  # a second start keeps the running loader
    assert started.position == (0, 0)
    for _ in range(3):
        (a, la), (b, lb) = plain.next(), started.next()
        assert torch.equal(a, b) and torch.equal(la, lb)
    started.close()
