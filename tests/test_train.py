"""Training pipeline on the tiny config: frozen upsamplers, metrics log, validation, data sources.

Each `train_lib.train` call compiles its step once (a few seconds on a CPU), so the tests
share short runs where they can.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io
from flax import nnx
from PIL import Image

from configs import tiny
from cwfcn import checkpoint, model, train_lib, weights
from cwfcn.data import datasets, synthetic, training

UPSAMPLERS = ("upscore2", "upscore_pool4")


def _initial_net(config):
    """The net `train` starts from: its init key is the second half of split(key(seed))."""
    return train_lib.init_net(config, jax.random.split(jax.random.key(config.seed))[1])


def _leaf(net: nnx.Module, *path: str) -> np.ndarray:
    tree = nnx.to_pure_dict(nnx.state(net))
    for key in path:
        tree = tree[key]
    return np.asarray(tree)


# --- 1. per-layer learning rates ----------------------------------------------------------------


@pytest.mark.parametrize("train_upsampling", [False, True])
def test_upsampling_deconvs_are_frozen_unless_asked(train_upsampling):
    config = tiny.get_config()
    config.train.steps = 2
    config.optim.train_upsampling = train_upsampling
    before = _initial_net(config)
    after, losses = train_lib.train(config)
    assert len(losses) == 2
    for name in ("conv1_1", "score_fr", "fc7"):
        assert not np.array_equal(_leaf(before, name, "kernel"), _leaf(after, name, "kernel"))
    for name in UPSAMPLERS:
        same = np.array_equal(_leaf(before, name), _leaf(after, name))
        assert same != train_upsampling, name
    if not train_upsampling:  # still exactly the bilinear kernels FCN fixes them to
        bilinear = model.bilinear_deconv_init(4, config.model.num_classes)
        np.testing.assert_array_equal(_leaf(after, "upscore2"), bilinear)


def test_frozen_upsamplers_get_no_weight_decay():
    config = tiny.get_config()
    config.optim.weight_decay = 0.5  # decay alone would move every weight
    params = nnx.state(_initial_net(config))
    tx = train_lib.make_optimizer(config)
    zeros = jax.tree.map(np.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    pure = nnx.to_pure_dict(updates)
    for name in UPSAMPLERS:
        assert not np.any(np.asarray(pure[name]))
    assert np.any(np.asarray(pure["conv1_1"]["kernel"]))


def _reference_loss(graphdef, images, labels):
    """The loss with the trunk as plain `nnx.Conv` layers on Caffe's full pad (XLA's own
    gradients of its convolutions; no border shortcut, no `model.conv2d`)."""

    def loss(state):
        net = nnx.merge(graphdef, state)
        x, maps = images, []
        for block, size in enumerate(model.VGG_BLOCK_SIZES, 1):
            for i in range(1, size + 1):
                x = jax.nn.relu(getattr(net, f"conv{block}_{i}")(x))
            x = model.max_pool_ceil(x)
            maps.append(x)
        return train_lib.loss_fn(net.head(*maps[2:], images.shape[1:3]), labels)

    return loss


def test_train_step_is_sgd_with_momentum_and_decay_on_the_reference_gradient():
    config = tiny.get_config()
    config.model.dropout_rate = 0.0
    lr, momentum, decay = (config.optim.learning_rate, config.optim.momentum,
                           config.optim.weight_decay)
    graphdef, state = nnx.split(_initial_net(config))
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(0, 50, (1, 41, 36, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 7, (1, 41, 36)), jnp.int32)  # 5, 6: unlabelled
    reference = jax.jit(jax.value_and_grad(_reference_loss(graphdef, images, labels)))
    tx = train_lib.make_optimizer(config)
    params, opt_state = jax.tree.map(jnp.copy, state), tx.init(state)
    want = nnx.to_pure_dict(state)
    trace = jax.tree.map(np.zeros_like, want)
    for _ in range(2):  # the second step reads the momentum of the first
        current = jax.tree.map(jnp.copy, state)
        nnx.replace_by_pure_dict(current, jax.tree.map(jnp.asarray, want))
        want_loss, grads = reference(current)
        params, opt_state, loss = train_lib.train_step(params, opt_state, images, labels,
                                                       jax.random.key(0), graphdef=graphdef,
                                                       tx=tx)
        np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5)
        grads = nnx.to_pure_dict(grads)
        for name in want:
            if name in UPSAMPLERS:  # fixed: no update, no decay
                continue
            for attr in want[name]:
                p = np.asarray(want[name][attr])
                trace[name][attr] = (np.asarray(grads[name][attr]) + decay * p
                                     + momentum * trace[name][attr])
                want[name][attr] = p - lr * trace[name][attr]
    got, start = nnx.to_pure_dict(params), nnx.to_pure_dict(state)
    for path, value in jax.tree_util.tree_leaves_with_path(want):
        def leaf(tree, path=path):
            for key in path:
                tree = tree[key.key]
            return np.asarray(tree)

        want_moved = np.asarray(value) - leaf(start)
        scale = max(float(np.abs(want_moved).max()), 1e-12)
        np.testing.assert_allclose(leaf(got) - leaf(start), want_moved, atol=1e-3 * scale,
                                   err_msg=jax.tree_util.keystr(path))
        assert (scale > 1e-9) == (path[0].key not in UPSAMPLERS)


def _fixed_trunk_config(tmp_path: Path):
    """tiny's net on a 3-photo SBD fixture (6 distinct inputs with the flips), trunk fixed."""
    root = tmp_path / "benchmark_RELEASE"
    _write_sbd(root, {"a": (40, 36), "b": (36, 44), "c": (44, 40)})
    config = tiny.get_config()
    config.data.name, config.data.root, config.data.split = "sbd", str(root), "train"
    config.model.num_classes = 21
    config.optim.train_trunk = False
    return config


def test_fixed_trunk_step_is_sgd_on_the_full_nets_gradient(tmp_path):
    config = _fixed_trunk_config(tmp_path)
    net = _initial_net(config)
    images, labels = training.make_batches(config)(0)
    x, y = model.preprocess(images, datasets.mean_bgr_of(config)), jnp.asarray(labels, jnp.int32)
    key = jax.random.key(3)
    graphdef, whole = nnx.split(net)
    grads = nnx.to_pure_dict(jax.jit(jax.grad(lambda s: train_lib.loss_fn(
        nnx.merge(graphdef, s)(x, dropout_key=key), y)))(whole))
    _, trunk, head = nnx.split(net, train_lib.is_trunk, ...)
    assert set(nnx.to_pure_dict(trunk)) == set(weights.VGG_CONVS)
    tx = train_lib.make_optimizer(config)
    maps = train_lib.trunk_maps(trunk, head, x, graphdef=graphdef)
    old = nnx.to_pure_dict(head)
    new, _, loss = train_lib.head_step(jax.tree.map(jnp.copy, head), tx.init(head), trunk, maps,
                                       y, key, graphdef=graphdef, tx=tx)
    assert np.isfinite(float(loss))
    lr, decay = config.optim.learning_rate, config.optim.weight_decay
    for name, leaves in nnx.to_pure_dict(new).items():
        for attr, value in (leaves.items() if isinstance(leaves, dict) else [(None, leaves)]):
            before = old[name] if attr is None else old[name][attr]
            grad = grads[name] if attr is None else grads[name][attr]
            # SGD's first step (momentum holds the gradient alone); FCN's fixed upsamplers stay.
            want = (np.asarray(before) if name in UPSAMPLERS else
                    np.asarray(before) - lr * (np.asarray(grad) + decay * np.asarray(before)))
            np.testing.assert_allclose(np.asarray(value), want, rtol=1e-4, atol=1e-7,
                                       err_msg=f"{name}.{attr}")


def test_fixed_trunk_runs_once_per_distinct_input_and_stays(tmp_path, monkeypatch):
    config = _fixed_trunk_config(tmp_path)
    config.train.steps = 9
    config.train.checkpoint_every = 9
    config.train.save_final_optimizer = False
    calls = []
    maps = train_lib.trunk_maps
    monkeypatch.setattr(train_lib, "trunk_maps", lambda *a, **k: calls.append(1) or maps(*a, **k))
    before = _initial_net(config)
    workdir = tmp_path / "run"
    after, losses = train_lib.train(config, str(workdir))
    batches = training.make_batches(config)
    distinct = {batches(step)[0].tobytes() for step in range(config.train.steps)}
    assert len(calls) == len(distinct) < config.train.steps
    assert len(losses) == config.train.steps and np.all(np.isfinite(losses))
    for name in weights.VGG_CONVS:
        np.testing.assert_array_equal(_leaf(before, name, "kernel"), _leaf(after, name, "kernel"))
    for name in ("fc6", "fc7", "score_pool3"):
        assert not np.array_equal(_leaf(before, name, "kernel"), _leaf(after, name, "kernel"))
    # The last checkpoint holds the net alone: it loads, but training cannot go on from it.
    loaded, trained = train_lib.ensure_trained(config, str(workdir))
    assert not trained
    np.testing.assert_array_equal(_leaf(loaded, "fc6", "kernel"), _leaf(after, "fc6", "kernel"))
    config.train.steps = 10
    with pytest.raises(ValueError, match=r"holds the net alone, no optimizer state"):
        train_lib.train(config, str(workdir))


def test_fixed_trunk_needs_fcn8s():
    config = tiny.get_config()
    config.optim.train_trunk = False
    config.model.arch = "pool4"
    with pytest.raises(ValueError, match=r"train_trunk = False .* FCN-8s"):
        train_lib.train(config)


# --- 2 and 3. metrics log and validation --------------------------------------------------------


def _records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_metrics_log_appends_and_resumes_with_validation(tmp_path):
    config = tiny.get_config()
    config.train.steps = 2
    config.train.log_every = 1
    config.train.eval_every = 2
    config.train.checkpoint_every = 2
    train_lib.train(config, str(tmp_path))
    first = (tmp_path / "metrics.jsonl").read_text()
    records = _records(tmp_path)
    train_rows = [r for r in records if "loss" in r]
    val_rows = [r for r in records if "val_mean_iu" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    assert [r["step"] for r in val_rows] == [2]
    for r in train_rows:
        assert set(r) == {"step", "loss", "images_per_s", "learning_rate"}
        assert np.isfinite(r["loss"]) and r["images_per_s"] > 0
        assert r["learning_rate"] == pytest.approx(config.optim.learning_rate)
    assert set(val_rows[0]) == {"step", "val_mean_iu", "val_pixel_acc"}
    assert 0.0 <= val_rows[0]["val_mean_iu"] <= val_rows[0]["val_pixel_acc"] + 1.0
    assert 0.0 <= val_rows[0]["val_pixel_acc"] <= 1.0

    config.train.steps = 4
    net, losses = train_lib.train(config, str(tmp_path))
    assert len(losses) == 2
    text = (tmp_path / "metrics.jsonl").read_text()
    assert text.startswith(first)  # appended, not rewritten
    records = _records(tmp_path)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in records if "val_mean_iu" in r] == [2, 4]
    # The last training rows hold this run's losses (log_every 1: one step each).
    np.testing.assert_allclose([r["loss"] for r in records if "loss" in r][-2:], losses,
                               rtol=1e-6)

    # The logged validation is the full net's pixel accuracy on held-out scenes, computed
    # here independently with numpy.
    mean = datasets.mean_bgr_of(config)
    correct = total = 0
    for i in range(config.data.num_val):
        images, labels = synthetic.synthetic_batch(config, synthetic.VAL_STEP_OFFSET + i)
        preds = np.argmax(np.asarray(net(model.preprocess(images, mean))), -1)
        valid = labels < config.model.num_classes
        correct += int(np.sum((preds == labels) & valid))
        total += int(valid.sum())
    assert records[-1]["step"] == 4 and "val_pixel_acc" in records[-1]
    assert records[-1]["val_pixel_acc"] == pytest.approx(correct / total, abs=1e-6)

    # A run killed after logging steps 3-4 but before saving step 4 (and mid-row): the rerun
    # resumes from step 2 and logs 3-4 again, once each, the torn row gone.
    shutil.rmtree(tmp_path / "4")
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "lo')
    assert checkpoint.latest_step(tmp_path) == 2
    train_lib.train(config, str(tmp_path))
    records = _records(tmp_path)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in records if "val_mean_iu" in r] == [2, 4]


def test_validation_scenes_are_held_out():
    config = tiny.get_config()
    train_images = [synthetic.synthetic_batch(config, s)[0] for s in range(4)]
    val_images = [x for x, _ in training.val_examples(config)]
    assert len(val_images) == config.data.num_val
    assert not any(np.array_equal(v, t) for v in val_images for t in train_images)


def test_no_workdir_writes_no_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny.get_config()
    config.train.steps = 1
    train_lib.train(config)
    assert not list(tmp_path.iterdir())


# --- 4. configs and data sources ----------------------------------------------------------------


@pytest.mark.parametrize("name,classes,mean,data", [
    ("pascal", 21, "voc", "sbd"),
    ("nyud", 40, "nyud", "nyud"),
    ("youtube", 21, "voc", "youtube"),
    ("cityscapes", 19, "cityscapes", "cityscapes"),
])
def test_configs_load(name, classes, mean, data):
    config = importlib.import_module(f"configs.{name}").get_config()
    assert datasets.net_classes(config) == classes
    assert datasets.mean_bgr_of(config) == datasets.get(mean).mean_bgr
    assert config.data.name == data
    assert config.train.batch_size == 1
    assert config.optim.train_upsampling is False


def test_pascal_config_is_fcn():
    from configs import pascal

    config = pascal.get_config()
    assert config.optim.name == "sgd" and config.optim.momentum == 0.99
    assert config.data.val_split == "seg11valid" and config.data.split == "train"
    assert config.model.init == "vgg16_onnx"


def _write_sbd(root: Path, shapes: dict[str, tuple[int, int]]) -> dict[str, tuple]:
    """A tiny benchmark_RELEASE/dataset; returns {id: (image, label)} as written."""
    dataset = root / "dataset"
    (dataset / "img").mkdir(parents=True)
    (dataset / "cls").mkdir()
    written = {}
    for seed, (image_id, (h, w)) in enumerate(shapes.items()):
        rng = np.random.default_rng(seed)
        label = rng.integers(0, 21, size=(h, w)).astype(np.uint8)
        image = rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8)
        Image.fromarray(image).save(dataset / "img" / f"{image_id}.png", format="PNG")
        (dataset / "img" / f"{image_id}.png").rename(dataset / "img" / f"{image_id}.jpg")
        scipy.io.savemat(dataset / "cls" / f"{image_id}.mat", {"GTcls": {"Segmentation": label}})
        written[image_id] = (image, label)
    (dataset / "train.txt").write_text("\n".join(shapes) + "\n")
    return written


def test_sbd_batches_visit_each_image_once_per_epoch_with_flips(tmp_path):
    root = tmp_path / "benchmark_RELEASE"
    written = _write_sbd(root, {"2008_000002": (8, 10), "2008_000003": (6, 12),
                                "2008_000004": (10, 8)})
    config = tiny.get_config()
    config.data.name = "sbd"
    config.data.root = str(root)
    config.data.split = "train"
    batches = training.make_batches(config)
    flips = []
    for epoch in range(4):
        seen = []
        for k in range(3):
            images, labels = batches(3 * epoch + k)
            assert images.dtype == np.uint8 and labels.dtype == np.uint8
            assert images.ndim == 4 and images.shape[0] == 1 and images.shape[-1] == 3
            assert labels.shape == images.shape[:3]
            for image_id, (image, label) in written.items():
                if label.shape != labels.shape[1:]:
                    continue
                for flipped in (False, True):
                    want_l = label[:, ::-1] if flipped else label
                    want_i = image[:, ::-1] if flipped else image
                    if np.array_equal(labels[0], want_l):
                        np.testing.assert_array_equal(images[0], want_i)  # PNG bytes: lossless
                        seen.append(image_id)
                        flips.append(flipped)
        assert sorted(seen) == sorted(written)
    assert any(flips) and not all(flips)
    again = training.make_batches(config)  # a pure function of (seed, step)
    for step in (0, 5, 11):
        for a, b in zip(batches(step), again(step), strict=True):
            np.testing.assert_array_equal(a, b)


def test_sbd_batches_of_several_need_images_of_one_size(tmp_path):
    root = tmp_path / "benchmark_RELEASE"
    written = _write_sbd(root, {"a": (8, 8), "b": (8, 8), "c": (6, 8), "d": (8, 8)})
    config = tiny.get_config()
    config.data.name = "sbd"
    config.data.root = str(root)
    config.data.split = "train"
    config.train.batch_size = 2
    batches = training.make_batches(config)
    sizes = []
    for step in range(6):
        try:
            images, labels = batches(step)
        except ValueError as e:  # a batch holding "c" and another
            assert re.search(r"different sizes \[\(6, 8\), \(8, 8\)\].*batch_size = 1", str(e))
            sizes.append(None)
            continue
        assert images.shape[0] == 2 and labels.shape == images.shape[:3]
        for label in labels:
            assert any(np.array_equal(label, w[1]) or np.array_equal(label, w[1][:, ::-1])
                       for w in written.values())
        sizes.append(images.shape[1:3])
    assert None in sizes and (8, 8) in sizes


def test_unknown_data_name_is_refused():
    config = tiny.get_config()
    config.data.name = "youtube"
    with pytest.raises(ValueError, match=r"config\.data\.name must be one of"):
        training.make_batches(config)
