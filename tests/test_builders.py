"""Tests for cwfcn.data.builders and the prepare CLI: each builder built from the layout
fixtures the reader tests write, read back with tfds.data_source, compared with the direct
readers; preparing twice, interrupted builds, the CLI's errors and TFDS's build command."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cwfcn.data import builders, cityscapes, datasets, nyud, prepare, prepared, voc
from tests.test_cityscapes import write_labelled_frame
from tests.test_nyud import write_clip, write_nyud
from tests.test_voc import write_sbd, write_voc
from tests.test_youtube import write_full_shot

REPO = Path(__file__).resolve().parents[1]
# Two photos of seg11valid (portrait and landscape, long enough for 6 frames 32 px apart); the
# readers list all 736, so the tests shorten the list (`short_seg11valid`).
SEG11VALID = {"2007_000033": (170, 12), "2007_000042": (14, 166)}
SBD_TRAIN = ["2008_000002", "2008_000003"]
CITY_VAL = ["frankfurt_000000_000294", "lindau_000001_000019"]
CITY_TRAIN = ["aachen_000000_000019"]
# Every video config: (builder, config, split) and the `--data` spec it stores.
VIDEO_CONFIGS = {
    ("cwfcn_pascal", "shift16", "seg11valid"): "pascal-translated:16",
    ("cwfcn_pascal", "shift32", "seg11valid"): "pascal-translated:32",
    ("cwfcn_youtube", "shots", "test"): "youtube",
    ("cwfcn_youtube", "full", "test"): "youtube-full",
    ("cwfcn_nyud", "clips", "test"): "nyud",
    ("cwfcn_cityscapes", "snippets", "val"): "cityscapes",
}
# Every images split built from the layouts: (builder, split) -> (Images, reader root key,
# raw split).
IMAGE_SPLITS = {
    ("cwfcn_pascal", "seg11valid"): (voc.IMAGES, "voc", "seg11valid"),
    ("cwfcn_pascal", "train"): (voc.SBD_IMAGES, "sbd", "train"),
    ("cwfcn_nyud", "test"): (nyud.IMAGES, "cwfcn_nyud", "test"),
    ("cwfcn_nyud", "train"): (nyud.IMAGES, "cwfcn_nyud", "train"),
    ("cwfcn_cityscapes", "val"): (cityscapes.IMAGES, "cwfcn_cityscapes", "val"),
    ("cwfcn_cityscapes", "train"): (cityscapes.IMAGES, "cwfcn_cityscapes", "train"),
}


def write_layouts(base: Path) -> dict[str, Path]:
    """Tiny raw layouts of every data set with a manual dir (the reader tests' writers):
    builder name -> its manual dir; also "voc" and "sbd", the PASCAL readers' roots."""
    pascal = base / "pascal"
    write_voc(pascal / "VOCdevkit", SEG11VALID, {})
    write_sbd(pascal / "benchmark_RELEASE", SBD_TRAIN)
    youtube = base / "youtube"
    write_full_shot(youtube, "cat/0001/001", 22, [1, 11, 21])
    write_full_shot(youtube, "dog/0002/001", 15, [5, 15])  # nothing >= 21 scored
    nyud = base / "nyud"
    write_nyud(nyud, ["5001", "5002"])
    write_clip(nyud, "5001", 35)  # every 10th back from 34: 4, 14, 24, 34
    write_clip(nyud, "5002", 12)  # 1, 11
    (nyud / "train.txt").write_text("5002\n")
    city = base / "cityscapes"
    for seed, frame_id in enumerate(CITY_VAL):
        write_labelled_frame(city, "val", frame_id, seed)
    write_labelled_frame(city, "train", CITY_TRAIN[0], 7, first=0)
    return {"cwfcn_pascal": pascal, "cwfcn_youtube": youtube, "cwfcn_nyud": nyud,
            "cwfcn_cityscapes": city, "voc": pascal / "VOCdevkit",
            "sbd": pascal / "benchmark_RELEASE"}


def short_seg11valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """seg11valid as the two photos the layouts hold (the real list has 736)."""
    monkeypatch.setattr(voc, "seg11valid_ids", lambda: list(SEG11VALID))


def prepare_all(layouts: dict[str, Path], data_dir: Path) -> dict[str, float]:
    """Every builder with a manual dir, every config: NAME/CONFIG -> build seconds."""
    seconds = {}
    for name in ("cwfcn_pascal", "cwfcn_youtube", "cwfcn_nyud", "cwfcn_cityscapes"):
        for done in prepare.prepare(name, data_dir=str(data_dir), manual_dir=str(layouts[name]),
                                    progress=False, log=lambda _: None):
            seconds[done.name] = done.seconds
    return seconds


@contextlib.contextmanager
def prepared_layouts(base: Path) -> Iterator[tuple[dict[str, Path], Path, dict[str, float]]]:
    """(layouts, data dir, build seconds) under `base`, seg11valid shortened meanwhile."""
    with pytest.MonkeyPatch.context() as mp:
        short_seg11valid(mp)
        layouts = write_layouts(base / "raw")
        seconds = prepare_all(layouts, base / "prepared")
        yield layouts, base / "prepared", seconds


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    with prepared_layouts(tmp_path_factory.mktemp("builders")) as found:
        yield found


def raw_videos(spec: str, root: Path) -> list:
    """READ of a `--data` spec on a raw layout: the videos a builder stores."""
    head, _, arg = spec.partition(":")
    return list(datasets.get(head).videos[head].read(datasets.Request(str(root), arg)))


def data_source(name: str, config: str, split: str, data_dir: Path):
    import tensorflow_datasets as tfds

    return tfds.data_source(f"{name}/{config}", split=split, data_dir=str(data_dir))


def assert_same_video(record: dict, video) -> None:
    """A record as tfds.data_source decodes it equals a reader's `protocol.Video`."""
    assert record["key"].decode() == video.key
    np.testing.assert_array_equal(record["frames"], np.stack(list(video.frames)))
    assert record["frames"].dtype == np.uint8 and record["labels"].dtype == np.uint8
    assert tuple(record["times"]) == tuple(video.times)
    assert tuple(record["labelled"]) == tuple(video.labelled)
    assert tuple(record["scored"]) == tuple(video.scored)
    if video.labelled:
        np.testing.assert_array_equal(record["labels"], np.stack(list(video.labels)))
    else:
        assert record["labels"].shape[0] == 0


def test_every_builder_has_the_one_features_spec_and_its_docstring_says_what_it_holds():
    want = builders.features().to_json()
    for name, cls in builders.BUILDERS.items():
        assert name.startswith("cwfcn_") and str(cls.VERSION) == "1.0.0"
        for config in cls.BUILDER_CONFIGS:
            builder = cls(config=config.name, data_dir="/nonexistent")
            assert builder.info.features.to_json() == want
            assert config.name in cls.__doc__
            assert all(split in cls.__doc__ for split in config.split_names)
        assert "Features" in cls.__doc__ and ("Manual dir" in cls.__doc__
                                              or "No manual dir" in cls.__doc__)


@pytest.mark.parametrize(("name", "config", "split"), list(VIDEO_CONFIGS))
def test_video_records_equal_the_direct_reader(built, monkeypatch, name, config, split):
    layouts, data_dir, _ = built
    short_seg11valid(monkeypatch)
    root = layouts["voc"] if name == "cwfcn_pascal" else layouts[name]
    want = raw_videos(VIDEO_CONFIGS[name, config, split], root)
    source = data_source(name, config, split, data_dir)
    assert len(source) == len(want) > 0
    for i, video in enumerate(want):  # in the reader's order
        assert_same_video(source[i], video)


def test_the_readers_protocol_is_what_is_stored(built):
    """Spot checks against the layouts, independent of the readers: NYUD's every 10th raw
    frame back to the labelled one, scored last; translated PASCAL's 6 frames, 2.. scored."""
    _, data_dir, _ = built
    (first, second) = (data_source("cwfcn_nyud", "clips", "test", data_dir)[i] for i in (0, 1))
    assert [int(f.mean()) for f in first["frames"]] == [4, 14, 24, 34]
    assert list(first["times"]) == [4, 14, 24, 34] and list(second["times"]) == [1, 11]
    assert list(first["labelled"]) == list(first["scored"]) == [3]
    pascal = data_source("cwfcn_pascal", "shift32", "seg11valid", data_dir)
    assert pascal[0]["frames"].shape == (6, 170 - 5 * 32, 12, 3)
    assert pascal[1]["frames"].shape == (6, 14, 166 - 5 * 32, 3)
    assert list(pascal[0]["scored"]) == [2, 3, 4, 5] and list(pascal[0]["labelled"]) == list(
        range(6))


@pytest.mark.parametrize(("name", "split"), list(IMAGE_SPLITS))
def test_image_records_equal_the_direct_reader(built, monkeypatch, name, split):
    layouts, data_dir, _ = built
    short_seg11valid(monkeypatch)
    images, root, raw_split = IMAGE_SPLITS[name, split]
    want = list(images.examples(str(layouts[root]), raw_split))
    source = data_source(name, "images", split, data_dir)
    assert len(source) == len(want) > 0
    for i, (image, label) in enumerate(want):
        record = source[i]
        np.testing.assert_array_equal(record["frames"], image[None])
        np.testing.assert_array_equal(record["labels"], label[None])
        assert list(record["labelled"]) == list(record["scored"]) == list(record["times"]) == [0]


def test_images_splits_without_raw_files_are_left_out(built):
    _, data_dir, _ = built
    import tensorflow_datasets as tfds

    splits = tfds.builder("cwfcn_nyud/images", data_dir=str(data_dir)).info.splits
    assert sorted(splits) == ["test", "train"]  # no val.txt, trainval.txt in the layout
    with pytest.raises(prepared.PreparedDataError, match=r"no split 'val'.*cwfcn\.data\.prepare"):
        prepared.images("cwfcn_nyud/images:val", str(data_dir))


def test_nothing_imports_tensorflow(built):
    assert not [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")]


def test_build_times_on_the_fixtures(built):
    """Every config of the layouts builds (they are a few pixels: seconds in all)."""
    _, _, seconds = built
    assert set(seconds) == {f"{n}/{c.name}" for n in ("cwfcn_pascal", "cwfcn_youtube",
                                                        "cwfcn_nyud", "cwfcn_cityscapes")
                            for c in builders.BUILDERS[n].BUILDER_CONFIGS}
    assert all(0 < s < 30 for s in seconds.values())


# --- preparing: twice, interrupted, errors ------------------------------------------------------


@pytest.fixture
def nyud_layout(tmp_path):
    root = tmp_path / "nyud"
    write_nyud(root, ["5001", "5002"])
    write_clip(root, "5001", 35)
    write_clip(root, "5002", 12)
    return root


def tree(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in directory.rglob("*")}


def test_prepare_twice_is_a_no_op(tmp_path, nyud_layout):
    out, said = tmp_path / "out", []
    (first,) = prepare.prepare("cwfcn_nyud/clips", data_dir=str(out), manual_dir=str(nyud_layout),
                               progress=False, log=said.append)
    assert first.built and first.examples == {"test": 2} and first.seconds > 0
    before = tree(out / "cwfcn_nyud")
    (again,) = prepare.prepare("cwfcn_nyud/clips", data_dir=str(out),
                               manual_dir=str(nyud_layout), progress=False, log=said.append)
    assert not again.built and again.examples == {"test": 2}
    assert "already prepared" in said[-1] and tree(out / "cwfcn_nyud") == before
    # --overwrite rebuilds it in place
    (rebuilt,) = prepare.prepare("cwfcn_nyud/clips", data_dir=str(out),
                                 manual_dir=str(nyud_layout), overwrite=True, progress=False,
                                 log=said.append)
    assert rebuilt.built and len(prepared.videos("cwfcn_nyud/clips", str(out))) == 2


@pytest.mark.parametrize("interrupt", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_an_interrupted_build_leaves_nothing_that_reads_as_complete(tmp_path, nyud_layout,
                                                                    monkeypatch, interrupt):
    out, records = tmp_path / "out", builders.to_record
    calls = []

    def failing_in_the_second_video(video):
        calls.append(video.key)
        if len(calls) == 2:
            raise interrupt
        return records(video)

    monkeypatch.setattr(builders, "to_record", failing_in_the_second_video)
    with pytest.raises(type(interrupt)):
        prepare.prepare("cwfcn_nyud/clips", data_dir=str(out), manual_dir=str(nyud_layout),
                        progress=False, log=lambda _: None)
    assert len(calls) == 2  # it was interrupted mid-way
    assert list((out / "cwfcn_nyud" / "clips").iterdir()) == []  # no version, no incomplete.*
    with pytest.raises(prepared.PreparedDataError, match="not prepared"):
        prepared.videos("cwfcn_nyud/clips", str(out))
    monkeypatch.setattr(builders, "to_record", records)
    prepare.prepare("cwfcn_nyud/clips", data_dir=str(out), manual_dir=str(nyud_layout),
                    progress=False, log=lambda _: None)
    assert len(prepared.videos("cwfcn_nyud/clips", str(out))) == 2


def test_a_killed_builds_leftover_is_partial_then_removed(tmp_path, nyud_layout):
    out, said = tmp_path / "out", []
    leftover = out / "cwfcn_nyud" / "clips" / "incomplete.ABC123_1.0.0"
    leftover.mkdir(parents=True)
    (leftover / "cwfcn_nyud-test.array_record-00000-of-00001").write_bytes(b"half")
    with pytest.raises(prepared.PreparedDataError, match="partial build") as info:
        prepared.videos("cwfcn_nyud/clips", str(out))
    assert str(out / "cwfcn_nyud" / "clips") in str(info.value)
    assert f"python -m cwfcn.data.prepare cwfcn_nyud/clips --manual-dir RAW --data-dir {out}" in (
        str(info.value))
    prepare.prepare("cwfcn_nyud/clips", data_dir=str(out), manual_dir=str(nyud_layout),
                    progress=False, log=said.append)
    assert not leftover.exists() and any("interrupted" in line for line in said)
    assert len(prepared.videos("cwfcn_nyud/clips", str(out))) == 2


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cwfcn.data.prepare", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_errors_in_a_fresh_process_have_no_traceback(tmp_path):
    bad = run_cli("cwfcn_nyud/clips", "--data-dir", str(tmp_path / "out"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("prepare: error: cwfcn_nyud reads raw files: pass --manual-dir")
    assert bad.stderr.count("\n") == 1


def test_cli_prepares_then_is_a_no_op(tmp_path, nyud_layout, capsys):
    argv = ["cwfcn_nyud/clips", "--manual-dir", str(nyud_layout), "--data-dir",
            str(tmp_path / "out"), "--no-progress"]
    assert prepare.main(argv) == 0
    out = capsys.readouterr().out
    assert "cwfcn_nyud/clips: prepared test 2" in out and "--data tfds:cwfcn_nyud/clips" in out
    assert prepare.main(argv) == 0
    assert "already prepared" in capsys.readouterr().out


def test_cli_errors_are_one_line_exit_2(tmp_path, nyud_layout, capsys):
    empty, elsewhere = tmp_path / "empty", tmp_path / "elsewhere"
    empty.mkdir()
    elsewhere.mkdir()
    (elsewhere / "README").write_text("not a data set")
    out = str(tmp_path / "out")
    cases = [
        (["cwfcn_imagenet", "--data-dir", out], "unknown data set 'cwfcn_imagenet'"),
        (["cwfcn_nyud/clip", "--manual-dir", str(nyud_layout), "--data-dir", out],
         "no config 'clip'; use one of clips, images"),
        (["cwfcn_nyud", "--manual-dir", str(tmp_path / "missing"), "--data-dir", out],
         "is not a directory"),
        (["cwfcn_nyud", "--manual-dir", str(empty), "--data-dir", out], "is empty"),
        (["cwfcn_nyud/clips", "--manual-dir", str(elsewhere), "--data-dir", out], "nyud.tar.gz"),
        (["cwfcn_cityscapes/snippets", "--manual-dir", str(elsewhere), "--data-dir", out],
         "gtFine"),
        (["cwfcn_nyud"], "--data-dir"),
    ]
    for argv, says in cases:
        assert prepare.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("prepare: error: ") and err.count("\n") == 1, err
        assert says in err, (argv, err)
    assert not (tmp_path / "out" / "cwfcn_nyud" / "clips" / "1.0.0").exists()


def test_cli_help_lists_the_builders(capsys):
    with pytest.raises(SystemExit) as info:
        prepare.main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    for name, cls in builders.BUILDERS.items():
        assert name in out and all(c.name in out for c in cls.BUILDER_CONFIGS)
    assert "--manual-dir" in out and "--data-dir" in out and "tfds-build" in out


@pytest.mark.slow
def test_tfds_build_runs_the_builders_without_tensorflow(tmp_path, nyud_layout):
    """TFDS's own `tfds build --imports cwfcn.data.builders` machinery, in a fresh process."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "cwfcn.data.prepare", "tfds-build", "cwfcn_nyud/clips",
         "--manual_dir", str(nyud_layout), "--data_dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    want = raw_videos("nyud", nyud_layout)
    source = data_source("cwfcn_nyud", "clips", "test", out)
    assert len(source) == len(want) == 2
    for i, video in enumerate(want):
        assert_same_video(source[i], video)
