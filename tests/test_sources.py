"""Named data sources: the sample and synthetic videos, and clear errors for bad names."""

import numpy as np
import pytest

from configs import tiny
from cwfcn.data import datasets, samples, sources


def test_synthetic_source_is_reiterable_and_shaped_by_the_config():
    config = tiny.get_config()
    source = sources.open_source("synthetic", config=config)
    first, second = list(source), list(source)
    assert source.num_classes == config.model.num_classes
    assert source.mean_bgr == datasets.get("voc").mean_bgr
    assert len(first) == config.data.num_videos
    for (f1, l1), (f2, l2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(f1, f2)
        np.testing.assert_array_equal(l1, l2)
        assert f1.shape == (config.data.num_frames, config.data.size, config.data.size, 3)
        assert f1.dtype == np.uint8 and l1.max() < config.model.num_classes


@pytest.mark.slow
def test_sample_source_is_the_translated_photos_then_the_street_clip():
    videos = list(sources.open_source("sample"))
    assert len(videos) == 4
    for frames, labels in videos[:3]:  # 338x500 or 375x500 photos slid 16 px sideways
        assert frames.shape[0] == 6 and frames.shape[2] == 500 - 5 * 16
        assert labels.shape == frames.shape[:3]
        # Frame k+1 is frame k moved by 16 px: the overlap is identical.
        np.testing.assert_array_equal(frames[1][:, :-16], frames[0][:, 16:])
    frames, labels = videos[3]
    assert frames.shape == (5, 563, 1000, 3)
    assert set(np.unique(labels)) <= {0, 7, 255}  # background, car, void (the truck)
    assert len(samples.fetch(["street_clip"])) == 1


@pytest.mark.parametrize(("spec", "message"), [
    ("imagenet", "unknown data"),
    ("pascal-translated:8", "the paper's shifts"),
    ("pascal-translated:16", "needs --data-dir"),
    ("cityscapes", "needs --data-dir"),
])
def test_bad_specs_raise_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        sources.open_source(spec)


def test_a_tfds_spec_is_opened_by_the_prepared_reader(monkeypatch):
    import sys
    import types

    import cwfcn.data

    calls = []
    fake = types.ModuleType("cwfcn.data.prepared")
    fake.open_prepared = lambda spec, data_dir, config=None: calls.append(
        (spec, data_dir, config)) or "opened"
    monkeypatch.setitem(sys.modules, "cwfcn.data.prepared", fake)
    monkeypatch.setattr(cwfcn.data, "prepared", fake, raising=False)
    assert sources.open_source(" tfds:cwfcn_nyud/clips:test", data_dir="/prepared") == "opened"
    assert calls == [("cwfcn_nyud/clips:test", "/prepared", None)]
    assert "tfds:NAME[/CONFIG][:SPLIT]" in sources.SOURCE_HELP


def test_make_source_forms_the_videos_it_is_given():
    from cwfcn import clockwork
    from cwfcn.data import protocol

    record = datasets.get("synthetic")
    entry = record.videos["synthetic"]
    frames = np.zeros((3, 4, 4, 3), np.uint8)
    video = protocol.labelled_video("a", frames, np.ones((3, 4, 4), np.uint8), slice(2, None))
    config = tiny.get_config()
    source = sources.make_source("mine", record, entry, [video], config)
    assert (source.name, source.num_classes) == ("mine", config.model.num_classes)
    (clip,) = source.clips(clockwork.parse_schedule("oracle"))
    assert clip.scored == (2,) and (clip.labels == 1).all()
    assert sources.make_source("mine", record, entry, [video]).num_classes == record.num_classes
