"""Tests for cwfcn.data.prepared: specs, prepared sources scored exactly as the raw layouts,
training photos, and one clear error for missing, partial or corrupt prepared data."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from cwfcn import clockwork, evaluate_lib, evaluation, model, schedules
from cwfcn.data import datasets, prepare, prepared, protocol, sources
from tests.test_builders import (
    IMAGE_SPLITS,
    VIDEO_CONFIGS,
    prepared_layouts,
    short_seg11valid,
)

# One schedule of each kind FORM tells apart (`protocol.kind`), and a second fixed one.
KINDS = "pool4,skip,alternating,adaptive:0.3,pipeline2,pipeline3"  # and oracle
# Row fields that measure the machine, not the net's outputs.
TIMING = evaluation.ROW_TIMING


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(layouts, data dir), seg11valid shortened for the module."""
    with prepared_layouts(tmp_path_factory.mktemp("prepared")) as (layouts, data_dir, _):
        yield layouts, data_dir


def raw_root(layouts: dict[str, Path], name: str) -> Path:
    return layouts["voc"] if name == "cwfcn_pascal" else layouts[name]


def test_specs_default_to_the_first_config_and_its_evaluation_split():
    assert prepared.parse_spec("cwfcn_pascal") == ("cwfcn_pascal", "shift16", "seg11valid")
    assert prepared.parse_spec("tfds:cwfcn_pascal/images") == ("cwfcn_pascal", "images",
                                                               "seg11valid")
    assert prepared.parse_spec("cwfcn_pascal/images:train") == ("cwfcn_pascal", "images", "train")
    assert prepared.parse_spec("CWFCN_NYUD") == ("cwfcn_nyud", "clips", "test")
    assert prepared.canonical("cwfcn_cityscapes") == "tfds:cwfcn_cityscapes/snippets:val"
    for bad, says in [("cwfcn_voc", "unknown prepared data"), ("cwfcn_nyud/clip", "no config"),
                      ("cwfcn_nyud/clips:val", "no split 'val'")]:
        with pytest.raises(ValueError, match=says):
            prepared.parse_spec(bad)


def test_record_of_names_the_data_sets_record():
    assert prepared.record_of("tfds:cwfcn_pascal/images:train") is datasets.get("voc")
    assert prepared.record_of("cwfcn_youtube/full").pred_lut == datasets.get("youtube").pred_lut
    assert prepared.record_of("cwfcn_cityscapes/images").num_classes == 19


def assert_same_clips(raw, ours) -> None:
    raw, ours = list(raw), list(ours)
    assert len(raw) == len(ours) > 0
    for a, b in zip(raw, ours, strict=True):
        assert (a.key, a.place, a.scored, a.counted, a.denominator) == (
            b.key, b.place, b.scored, b.counted, b.denominator)
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.labels, b.labels)


@pytest.mark.parametrize(("name", "config", "split"), list(VIDEO_CONFIGS))
def test_prepared_sources_give_the_raw_layouts_clips(built, monkeypatch, name, config, split):
    """FORM over the prepared videos = FORM over READ, for every kind of schedule and the
    phase policies each data set takes."""
    layouts, data_dir = built
    short_seg11valid(monkeypatch)
    spec = VIDEO_CONFIGS[name, config, split]
    raw = sources.open_source(spec, data_dir=str(raw_root(layouts, name)))
    ours = prepared.open_prepared(f"{name}/{config}", str(data_dir))
    assert ours.name == f"tfds:{name}/{config}:{split}"
    assert (ours.num_classes, ours.mean_bgr, ours.pred_lut, ours.phase, ours.phases,
            ours.protocol) == (raw.num_classes, raw.mean_bgr, raw.pred_lut, raw.phase,
                               raw.phases, raw.protocol)
    for schedule in schedules.parse_schedules(KINDS, []):
        for phase in phases_of(raw, schedule):
            try:
                want = list(raw.clips(schedule, phase))
            except ValueError as e:  # e.g. YouTube's phase 3: the prepared source says so too
                with pytest.raises(ValueError, match=str(e)[:30]):
                    list(ours.clips(schedule, phase))
                continue
            assert_same_clips(want, ours.clips(schedule, phase))


@pytest.mark.parametrize(("name", "config", "split"), list(VIDEO_CONFIGS))
def test_a_process_reads_only_its_own_videos(built, monkeypatch, name, config, split):
    """Multi-host evaluation shards by video index: process p of 2 reads only records
    p, p + 2, ..., and its clips are those of one process's run at those places (the coin
    and the keys drawn by the global index)."""
    _, data_dir = built
    short_seg11valid(monkeypatch)
    reads = []
    real = prepared.PreparedVideos.record
    monkeypatch.setattr(prepared.PreparedVideos, "record",
                        lambda self, i: reads.append(i) or real(self, i))
    for spec in ("oracle", "skip", "adaptive:0.3"):
        schedule = clockwork.parse_schedule(spec)
        whole = list(prepared.open_prepared(f"{name}/{config}", str(data_dir)).clips(schedule))
        assert [c.place for c in whole] == sorted(c.place for c in whole)
        shards = []
        for process in range(2):
            source = prepared.open_prepared(f"{name}/{config}", str(data_dir))  # nothing kept
            reads.clear()
            shards.append(list(source.clips(schedule, shard=(process, 2))))
            assert set(reads) == set(range(process, len(source.videos), 2))
            assert all(c.place[0] % 2 == process for c in shards[-1])
        assert_same_clips(whole, sorted(shards[0] + shards[1], key=lambda c: c.place))


def phases_of(source, schedule) -> list[str | None]:
    """The default phase, and for a fixed schedule every other policy the source takes."""
    if protocol.kind(schedule) != "fixed":
        return [None]
    policies = {"all": "all", "coin": "coin", "fixed:1": "fixed:K"}
    return [None, *(p for p, kind in policies.items() if kind in source.phases)]


def test_the_tfds_spec_of_open_source_is_the_prepared_source(built):
    _, data_dir = built
    source = sources.open_source("tfds:cwfcn_nyud", data_dir=str(data_dir))
    assert source.name == "tfds:cwfcn_nyud/clips:test" and len(list(source)) == 2
    with pytest.raises(prepared.PreparedDataError, match="--data-dir"):
        sources.open_source("tfds:cwfcn_nyud")


def same_metrics(net, raw, ours, schedule: str) -> None:
    """One schedule's row on both sources: equal in every field but the timings."""
    to_run = [clockwork.parse_schedule(schedule)]
    (want,), (got,) = (evaluate_lib.run_schedules(net, s, to_run) for s in (raw, ours))
    assert want["frames"] > 0 and "mean_iu" in want
    assert {k: v for k, v in want.items() if k not in TIMING} == {
        k: v for k, v in got.items() if k not in TIMING}


@pytest.mark.slow
def test_evaluation_on_prepared_data_equals_the_raw_layouts(built):
    """Metric for metric, on Cityscapes' snippets (the seeded coin's phases); the clip tests
    above show every other config forms the same clips."""
    layouts, data_dir = built
    raw = sources.open_source("cityscapes", data_dir=str(layouts["cwfcn_cityscapes"]))
    ours = prepared.open_prepared("cwfcn_cityscapes/snippets", str(data_dir))
    same_metrics(model.narrow_fcn8s(19, rngs=nnx.Rngs(0)), raw, ours, "skip")


@pytest.mark.slow
def test_the_prepared_sample_gives_exactly_the_samples_metrics(tmp_path):
    prepare.prepare("cwfcn_sample", data_dir=str(tmp_path), progress=False, log=lambda _: None)
    raw = sources.open_source("sample")
    ours = sources.open_source("tfds:cwfcn_sample", data_dir=str(tmp_path))
    assert_same_clips(raw.clips(clockwork.parse_schedule("oracle")),
                      ours.clips(clockwork.parse_schedule("oracle")))
    same_metrics(model.narrow_fcn8s(21, rngs=nnx.Rngs(0)), raw, ours, "skip")


@pytest.mark.parametrize(("name", "split"), list(IMAGE_SPLITS))
def test_images_are_the_readers_photos_random_access(built, monkeypatch, name, split):
    layouts, data_dir = built
    short_seg11valid(monkeypatch)
    images, root, raw_split = IMAGE_SPLITS[name, split]
    want = list(images.examples(str(layouts[root]), raw_split))
    ours = prepared.images(f"tfds:{name}/images:{split}", str(data_dir))
    if split == "train":  # what grain's worker processes get
        ours = pickle.loads(pickle.dumps(ours))
    assert len(ours) == len(want)
    for i in reversed(range(len(want))):  # any order
        image, label = ours[i]
        assert image.dtype == np.uint8 and image.shape == (*label.shape, 3)
        np.testing.assert_array_equal(image, want[i][0])
        np.testing.assert_array_equal(label, want[i][1])


def test_videos_and_photos_are_not_mixed_up(built):
    _, data_dir = built
    with pytest.raises(ValueError, match="not training photos: train on tfds:cwfcn_nyud/images"):
        prepared.images("cwfcn_nyud/clips", str(data_dir))
    with pytest.raises(ValueError, match="use tfds:cwfcn_pascal/shift16 or tfds:cwfcn_pascal/shi"):
        prepared.open_prepared("cwfcn_pascal/images", str(data_dir))
    with pytest.raises(ValueError, match="a data set with an images config"):
        prepared.images("cwfcn_sample", str(data_dir))


# --- missing, partial and corrupt prepared data -------------------------------------------------


@pytest.fixture
def copy(built, tmp_path):
    """A copy of the prepared NYUD clips to break, and its version directory."""
    _, data_dir = built
    out = tmp_path / "copy"
    shutil.copytree(data_dir / "cwfcn_nyud" / "clips", out / "cwfcn_nyud" / "clips")
    return out, out / "cwfcn_nyud" / "clips" / "1.0.0"


def shard(version: Path) -> Path:
    (path,) = version.glob("*.array_record-*")
    return path


def assert_error(call, directory: Path, data_dir: Path, says: str, overwrite: bool):
    with pytest.raises(prepared.PreparedDataError, match=says) as info:
        call()
    message = str(info.value)
    assert str(directory) in message, message
    command = ("python -m cwfcn.data.prepare cwfcn_nyud/clips --manual-dir RAW --data-dir "
               f"{data_dir}")
    assert command + (" --overwrite" if overwrite else "") in message, message
    assert isinstance(info.value, ValueError)


def test_missing_data(tmp_path):
    with pytest.raises(prepared.PreparedDataError, match=r"needs --data-dir.*cwfcn\.data\.prepare"):
        prepared.videos("cwfcn_nyud", None)
    version = tmp_path / "cwfcn_nyud" / "clips" / "1.0.0"
    assert_error(lambda: prepared.videos("cwfcn_nyud", str(tmp_path)), version, tmp_path,
                 "not prepared", overwrite=False)


def test_truncated_records(copy):
    out, version = copy
    path = shard(version)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    assert_error(lambda: prepared.videos("cwfcn_nyud", str(out)), version, out, "corrupt", True)


def test_flipped_bytes_in_a_record(copy):
    out, version = copy
    path = shard(version)
    data = bytearray(path.read_bytes())
    for i in range(100, min(len(data), 60_000), 7):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))

    def read_all():
        videos = prepared.videos("cwfcn_nyud", str(out))
        return [videos[i] for i in range(len(videos))]

    assert_error(read_all, version, out, "corrupt", True)


def test_a_missing_shard(copy):
    out, version = copy
    shard(version).unlink()
    assert_error(lambda: prepared.videos("cwfcn_nyud", str(out)), version, out, "is missing", True)


@pytest.mark.parametrize("content", ["{not json", json.dumps({"name": 3, "splits": "x"})])
def test_a_bad_dataset_info(copy, content):
    out, version = copy
    (version / "dataset_info.json").write_text(content)
    assert_error(lambda: prepared.videos("cwfcn_nyud", str(out)), version, out, "corrupt", True)


def test_no_dataset_info(copy):
    out, version = copy
    (version / "dataset_info.json").unlink()
    assert_error(lambda: prepared.videos("cwfcn_nyud", str(out)), version, out,
                 "no dataset_info.json", True)


def test_another_version_only(copy):
    out, version = copy
    version.rename(version.with_name("0.9.0"))
    assert_error(lambda: prepared.videos("cwfcn_nyud", str(out)), version, out,
                 r"version\(s\) \['0.9.0'\]\): not prepared", False)
