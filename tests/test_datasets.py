"""The data-set registry: one record per data set, the config's mean and classes from it."""

import importlib

import ml_collections
import pytest
from flax import nnx

from configs import default, tiny
from cwfcn import config_check, train_lib
from cwfcn.data import datasets, sources, training, voc, youtube


def test_registry_answers_every_spec_and_training_name():
    names = datasets.registry()
    for name in ("voc", "sbd", "pascal-translated", "sample", "synthetic", "nyud", "youtube",
                 "youtube-full", "cityscapes", "video"):
        assert name in names
    assert datasets.get("sbd") is datasets.get("pascal-translated") is voc.DATASET
    assert datasets.get("youtube-full") is youtube.DATASET
    assert len(datasets.records()) == len({id(r) for r in names.values()})
    with pytest.raises(ValueError, match=r"unknown data set 'imagenet'; use one of \['cityscapes'"):
        datasets.get("imagenet")


def test_records_hold_the_papers_facts():
    # The means of the reference nets (BGR, subtracted from 0..255 pixels).
    assert datasets.get("voc").mean_bgr == (104.00698793, 116.66876762, 122.67891434)
    assert datasets.get("youtube").mean_bgr == (104.00698793, 116.66876762, 122.67891434)
    assert datasets.get("nyud").mean_bgr == (116.190, 97.203, 92.318)
    assert datasets.get("cityscapes").mean_bgr == (72.78044, 83.21195, 73.45286)
    counts = {name: (datasets.get(name).num_classes, datasets.get(name).net_classes)
              for name in ("voc", "nyud", "youtube", "cityscapes")}
    assert counts == {"voc": (21, 21), "nyud": (40, 40), "youtube": (11, 21),
                      "cityscapes": (19, 19)}
    yt = datasets.get("youtube")
    # VOC cat (8) -> YouTube cat (5); VOC person (15) is not a YouTube class: background.
    assert yt.classes[5] == "cat" and yt.pred_lut[8] == 5 and yt.pred_lut[15] == 0
    assert datasets.get("nyud").classes[0] == "wall" and datasets.get("nyud").classes[-1] == (
        "otherprop")


@pytest.mark.parametrize("name,classes,mean", [
    ("default", 21, "voc"), ("tiny", 5, "voc"), ("sample", 21, "voc"), ("pascal", 21, "voc"),
    ("pascal_baseline", 21, "voc"), ("nyud", 40, "nyud"), ("youtube", 21, "voc"),
    ("cityscapes", 19, "cityscapes"),
])
def test_configs_take_the_mean_and_classes_of_their_data_set(name, classes, mean):
    config = importlib.import_module(f"configs.{name}").get_config()
    assert datasets.net_classes(config) == classes
    assert datasets.mean_bgr_of(config) == datasets.get(mean).mean_bgr
    assert "mean" not in config.data and "schedule" not in config.clock
    config_check.check(config)


def test_a_config_may_override_the_mean_and_the_classes():
    config = default.get_config()
    config.data.mean = "cityscapes"  # an unlocked config may add the override
    config.model.num_classes = 7
    assert datasets.mean_bgr_of(config) == (72.78044, 83.21195, 73.45286)
    assert datasets.net_classes(config) == 7
    config.model.widths = "narrow"
    assert train_lib.build_net(config, nnx.Rngs(0)).num_classes == 7


def test_synthetic_source_follows_the_configs_net():
    config = tiny.get_config()
    config.data.mean = "nyud"
    source = sources.open_source("synthetic", config=config)
    assert (source.num_classes, source.mean_bgr) == (5, (116.190, 97.203, 92.318))
    assert sources.open_source("sample").mean_bgr == voc.DATASET.mean_bgr


@pytest.mark.parametrize("spec", ["nyud", "youtube", "cityscapes"])
def test_a_data_directory_is_checked_when_the_source_opens(tmp_path, spec):
    with pytest.raises(ValueError, match="not found"):
        sources.open_source(spec, data_dir=str(tmp_path))


def test_training_names_come_from_the_records():
    config = ml_collections.ConfigDict(tiny.get_config().to_dict())
    config.data.name = "imagenet"
    with pytest.raises(ValueError, match=r"must be one of \[.*'synthetic'.*'sbd'.*got 'imagenet'"):
        training.make_batches(config)
    with pytest.raises(ValueError, match=r"no validation data for config\.data\.name 'imagenet'"):
        training.val_examples(config)


@pytest.mark.parametrize("completed,every,last,due", [
    (10, 5, 100, True), (11, 5, 100, False), (7, 5, 7, True), (7, 0, 7, False),
    (3, 0, 100, False), (1, 1, 4, True),
])
def test_is_due_every_period_and_at_the_end(completed, every, last, due):
    assert train_lib.is_due(completed, every, last) is due


def test_a_prepared_name_resolves_through_the_prepared_reader(monkeypatch):
    import sys
    import types

    import cwfcn.data

    fake = types.ModuleType("cwfcn.data.prepared")
    fake.record_of = lambda spec: voc.DATASET if spec == "tfds:p/images" else None
    monkeypatch.setitem(sys.modules, "cwfcn.data.prepared", fake)
    monkeypatch.setattr(cwfcn.data, "prepared", fake, raising=False)
    assert datasets.get("tfds:p/images") is voc.DATASET
