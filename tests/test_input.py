"""The grain training input: epochs, flips, host shards, worker prefetch, and resuming.

Most tests read a fake data set of tiny labelled images whose pixels say which image
they are and whether they were flipped, so every batch is checked against the examples
themselves, not against the pipeline's own bookkeeping.
"""

from __future__ import annotations

import json
import shutil
import sys
import types

import numpy as np
import pytest
from flax import nnx

from configs import tiny
from cwfcn import checkpoint, config_check, train_lib
from cwfcn.data import datasets, synthetic, training

H, W = 4, 5


def _example(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Image i: channel 0 holds i, channel 1 the column (a flip reverses it)."""
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0], image[..., 1] = i, np.arange(W)
    label = np.full((H, W), i, np.uint8)
    label[:, 0] = 255
    return image, label


def _ids(images: np.ndarray, labels: np.ndarray) -> list[tuple[int, bool]]:
    """(which image, flipped) of each row, checked against the example itself."""
    out = []
    for image, label in zip(images, labels, strict=True):
        i, flipped = int(image[0, 0, 0]), bool(image[0, 0, 1])
        want_image, want_label = _example(i)
        if flipped:
            want_image, want_label = want_image[:, ::-1], want_label[:, ::-1]
        np.testing.assert_array_equal(image, want_image)
        np.testing.assert_array_equal(label, want_label)
        out.append((i, flipped))
    return out


@pytest.fixture
def fake(monkeypatch):
    """`config.data.name = "fake"` trains on `config.data.num_videos` fake examples."""
    def examples(config):
        return [_example(i) for i in range(config.data.num_videos)]

    record = datasets.Training(None, lambda config: iter(()), examples)
    real = training._training
    monkeypatch.setattr(training, "_training",
                        lambda config: record if config.data.name == "fake" else real(config))

    def config_of(num: int, batch_size: int = 1, **values):
        config = tiny.get_config()
        config.data.name, config.data.num_videos = "fake", num
        config.train.batch_size = batch_size
        for key, value in values.items():
            node, name = key.split(".")
            config[node][name] = value
        return config

    return config_of


def _read(reader, steps: int) -> list[list[tuple[int, bool]]]:
    return [_ids(*next(reader)) for _ in range(steps)]


def test_each_example_once_per_epoch_in_a_new_order_with_flips(fake):
    n = 7
    config = fake(n)
    batches = training.make_batches(config)
    epochs = [[_ids(*batches(e * n + k))[0] for k in range(n)] for e in range(4)]
    orders = [tuple(i for i, _ in epoch) for epoch in epochs]
    for order in orders:
        assert sorted(order) == list(range(n))
    assert len(set(orders)) == len(orders)  # reshuffled every epoch
    flips = [f for epoch in epochs for _, f in epoch]
    assert any(flips) and not all(flips)
    # Seeded: the same config reads the same; another seed another order.
    again = training.make_batches(fake(n))
    assert [_ids(*again(s)) for s in range(2 * n)] == [_ids(*batches(s)) for s in range(2 * n)]
    other = training.make_batches(_with_seed(fake(n), 1))
    assert [_ids(*other(s))[0][0] for s in range(n)] != list(orders[0])


def _with_seed(config, seed):
    config.seed = seed
    return config


@pytest.mark.parametrize("hosts", [2, 4])
def test_host_shards_are_disjoint_and_make_up_the_global_batch(fake, hosts):
    n, batch_size = 12, 4
    config = fake(n, batch_size)
    whole = training.make_input(config).batches
    shards = [training.make_input(config, (p, hosts)).batches for p in range(hosts)]
    for epoch in range(2):
        seen = []
        for step in range(epoch * 3, epoch * 3 + 3):  # 3 steps of 4: one epoch
            rows = [_ids(*shard[step]) for shard in shards]
            assert all(len(r) == batch_size // hosts for r in rows)
            joined = [row for block in rows for row in block]
            assert joined == _ids(*whole[step])  # in order: host p holds block p
            seen += joined
        assert sorted(i for i, _ in seen) == list(range(n))  # disjoint, and they cover
    with pytest.raises(ValueError, match="batch_size = 4 does not split over 3 hosts"):
        training.make_input(config, (0, 3))


def test_synthetic_batches_come_by_step_through_the_same_pipeline():
    config = tiny.get_config()
    config.train.batch_size = 4
    for step in (0, 3):
        images, labels = synthetic.synthetic_batch(config, step)
        for p in range(2):
            got = training.make_input(config, (p, 2)).batches[step]
            np.testing.assert_array_equal(got[0], images[2 * p:2 * p + 2])
            np.testing.assert_array_equal(got[1], labels[2 * p:2 * p + 2])
    reader = training.make_input(config).open(4, 2)
    np.testing.assert_array_equal(next(reader)[0], synthetic.synthetic_batch(config, 2)[0])
    reader.close()


def test_a_saved_state_resumes_the_reader_where_it_stopped(fake):
    config = fake(5, **{"train.steps": 12})
    inputs = training.make_input(config)
    straight = _read(inputs.open(12), 12)
    first = inputs.open(12)
    assert _read(first, 4) == straight[:4]
    state = json.loads(json.dumps(first.state(4)))  # as the checkpoint holds it
    assert state["grain"] == {"next_index": 4} and state["next_step"] == 4
    resumed = inputs.open(12, 4, state)
    assert _read(resumed, 3) == straight[4:7]
    # A reader opened without a state (an older checkpoint) starts at its step by index;
    # its own state, saved later, resumes right too.
    fresh = inputs.open(12, 7)
    assert _read(fresh, 2) == straight[7:9]
    again = inputs.open(12, 9, json.loads(json.dumps(fresh.state(9))))
    assert _read(again, 3) == straight[9:12]
    with pytest.raises(StopIteration):
        next(again)


def test_a_state_of_another_input_or_step_is_refused(fake):
    inputs = training.make_input(fake(5))
    state = inputs.open(8).state(0)
    state["next_step"], state["grain"] = 3, {"next_index": 3}  # as if 3 steps were read
    reseeded = training.make_input(_with_seed(fake(5), 7))
    with pytest.raises(checkpoint.CheckpointError, match=r"trained on another input \(seed 0 "
                                                         r"there, 7 now\).*new --workdir"):
        reseeded.open(8, 3, state)
    with pytest.raises(checkpoint.CheckpointError, match=r"input state is of step 3.*not 2"):
        inputs.open(8, 2, state)
    state["grain"] = {"next_index": 2}  # the iterator's own position disagrees
    with pytest.raises(checkpoint.CheckpointError, match=r"input state is of step 3"):
        inputs.open(8, 3, state)
    with pytest.raises(checkpoint.CheckpointError, match="not one this version reads"):
        inputs.open(8, 3, {"next_index": 3})


@pytest.mark.slow
def test_worker_processes_read_the_same_batches(fake):
    """config.data.workers = 2 (grain's mp_prefetch) reads what the in-process reader does;
    its state resumes it, with the same or another worker count."""
    steps = 8
    config = fake(5, **{"train.steps": steps})
    straight = _read(training.make_input(config).open(steps), steps)
    workers = training.make_input(fake(5, **{"train.steps": steps, "data.workers": 2}))
    reader = workers.open(steps)
    assert _read(reader, 3) == straight[:3]
    state = json.loads(json.dumps(reader.state(3)))
    reader.close()
    resumed = workers.open(steps, 3, state)
    assert _read(resumed, 5) == straight[3:]
    resumed.close()
    assert _read(training.make_input(config).open(steps, 3, state), 5) == straight[3:]


def test_a_prepared_set_trains_through_the_same_pipeline(monkeypatch):
    """config.data.name "tfds:NAME/CONFIG:SPLIT" reads `prepared.images` (faked here) of
    that split, and validates on the same NAME/CONFIG's `config.data.val_split`."""
    asked = []

    def images(spec, data_dir):
        asked.append((spec, data_dir))
        return [_example(i) for i in range(3 if spec.endswith(":train") else 2)]

    def parse_spec(spec):
        name, _, split = spec.partition(":")
        return (*name.split("/"), split)

    fake = types.SimpleNamespace(images=images, parse_spec=parse_spec)
    import cwfcn.data
    monkeypatch.setitem(sys.modules, "cwfcn.data.prepared", fake)
    monkeypatch.setattr(cwfcn.data, "prepared", fake, raising=False)
    config = tiny.get_config()
    config.data.name, config.data.root = "tfds:cwfcn_pascal/images:train", "/prepared"
    config.data.val_split = "seg11valid"
    batches = training.make_batches(config)
    assert sorted(_ids(*batches(s))[0][0] for s in range(3)) == [0, 1, 2]
    assert len(list(training.val_examples(config))) == 2
    assert asked[0] == ("cwfcn_pascal/images:train", "/prepared")
    assert asked[-1] == ("cwfcn_pascal/images:seg11valid", "/prepared")


def test_workers_knob_is_checked():
    config = tiny.get_config()
    config.data.workers = -1
    with pytest.raises(config_check.ConfigError, match=r"config\.data\.workers = -1"):
        config_check.check(config)


def test_host_shard_of_a_mesh():
    mesh = train_lib.distributed.make_mesh(1)
    assert train_lib.host_shard(4, mesh) == (0, 1)
    assert train_lib.host_shard(4, None) == (0, 1)


def _recording(monkeypatch, net) -> list[np.ndarray]:
    """Replaces `train_lib.train_step` by one that records its preprocessed images and
    leaves the net as it is, and makes `train` start from copies of `net`: what is tested
    is which batches the loop feeds, and nothing compiles or builds a net (seconds each)."""
    seen = []
    monkeypatch.setattr(train_lib, "init_net", lambda config, key: nnx.clone(net))

    def record(params, opt_state, images, labels, key, **_):
        seen.append(np.asarray(images))
        return params, opt_state, np.float32(np.mean(images))

    monkeypatch.setattr(train_lib, "train_step", record)
    return seen


@pytest.mark.slow
def test_resumed_training_reads_the_batches_of_an_uninterrupted_run(tmp_path, monkeypatch,
                                                                    capsys, net):
    """`train` resumed from the checkpoint of step 2 feeds its steps the batches an
    uninterrupted run fed them (the images themselves, compared), and so does a resume
    from a checkpoint saved without input state (the older format)."""
    from tests.test_train import _write_sbd

    root = tmp_path / "benchmark_RELEASE"
    _write_sbd(root, {f"2008_00000{i}": (8, 8) for i in range(3)})
    config = tiny.get_config()
    config.data.name, config.data.root, config.data.split = "sbd", str(root), "train"
    config.train.steps, config.train.checkpoint_every, config.train.log_every = 6, 2, 6
    seen = _recording(monkeypatch, net)  # conftest's narrow net: the tiny config's shapes
    train_lib.train(config, str(tmp_path / "straight"))
    straight, seen[:] = list(seen), []
    assert checkpoint.restore_input(tmp_path / "straight", 2)["next_step"] == 2

    # Killed after the save of step 2: its later steps never happened.
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "straight", resumed)
    for step in ("4", "6"):
        shutil.rmtree(resumed / step)
    train_lib.train(config, str(resumed))
    assert len(seen) == 4
    for got, want in zip(seen, straight[2:], strict=True):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(straight[2:5], straight[:3])  # resuming is not restarting

    # A checkpoint of the older format (no input state) resumes at its step by index.
    older = tmp_path / "older"
    params = nnx.state(net)
    checkpoint.save(older, 4, params, train_lib.make_optimizer(config).init(params))
    assert checkpoint.restore_input(older, 4) is None
    seen[:] = []
    capsys.readouterr()
    train_lib.train(config, str(older))
    assert "holds no input state" in capsys.readouterr().err
    assert len(seen) == 2
    for got, want in zip(seen, straight[4:], strict=True):
        np.testing.assert_array_equal(got, want)
