"""Tests for cwfcn.data.cityscapes on a tiny leftImg8bit_sequence + gtFine tree written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cwfcn.data import cityscapes, protocol

H, W = 8, 10

# (labelId, trainId) for labelIds 0..33, typed in from the table of cityscapesScripts'
# helpers/labels.py (trainId 255 = not evaluated).
OFFICIAL = [
    (0, 255), (1, 255), (2, 255), (3, 255), (4, 255), (5, 255), (6, 255),  # void
    (7, 0), (8, 1), (9, 255), (10, 255),  # road, sidewalk, parking, rail track
    (11, 2), (12, 3), (13, 4), (14, 255), (15, 255), (16, 255),  # building .. tunnel
    (17, 5), (18, 255), (19, 6), (20, 7),  # pole, polegroup, traffic light, traffic sign
    (21, 8), (22, 9), (23, 10), (24, 11), (25, 12),  # vegetation, terrain, sky, person, rider
    (26, 13), (27, 14), (28, 15), (29, 255), (30, 255),  # car, truck, bus, caravan, trailer
    (31, 16), (32, 17), (33, 18),  # train, motorcycle, bicycle
]  # fmt: skip


def label_ids(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 34, size=(H, W)).astype(np.uint8)


def write_labelled_frame(
    root: Path, split: str, frame_id: str, seed: int, first: int = 19, frame_hw=(H, W)
) -> np.ndarray:
    """gtFine labelIds for ``frame_id`` and sequence frames from ``last - first`` to ``last``.

    Sequence frame f is a solid grey of value f % 256, so frames can be told apart.
    """
    city, seq, last = frame_id.rsplit("_", 2)
    ids = label_ids(seed)
    gt = root / "gtFine" / split / city
    gt.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids).save(gt / f"{frame_id}_gtFine_labelIds.png")
    seq_dir = root / "leftImg8bit_sequence" / split / city
    seq_dir.mkdir(parents=True, exist_ok=True)
    for f in range(int(last) - first, int(last) + 1):
        image = np.full((*frame_hw, 3), f % 256, np.uint8)
        Image.fromarray(image).save(seq_dir / f"{city}_{seq}_{f:06d}_leftImg8bit.png")
    return ids


def expected_train_ids(ids: np.ndarray) -> np.ndarray:
    table = dict(OFFICIAL)
    return np.vectorize(table.__getitem__)(ids).astype(np.uint8)


def test_train_id_table_is_official():
    got = cityscapes.to_train_ids(np.arange(34, dtype=np.uint8))
    assert got.tolist() == [train_id for _, train_id in OFFICIAL]
    assert cityscapes.to_train_ids(np.array([34, 200, 255], np.uint8)).tolist() == [255] * 3
    assert len(cityscapes.CLASSES) == 19
    assert cityscapes.CLASSES[13] == "car" and cityscapes.CLASSES[18] == "bicycle"


def test_videos_twenty_frames_labels_on_last(tmp_path):
    a = write_labelled_frame(tmp_path, "val", "frankfurt_000000_000294", seed=0)
    b = write_labelled_frame(tmp_path, "val", "lindau_000001_000019", seed=1)
    assert cityscapes.labelled_frame_ids(tmp_path, "val") == [
        "frankfurt_000000_000294",
        "lindau_000001_000019",
    ]
    videos = list(cityscapes.videos(tmp_path, "val"))
    assert len(videos) == 2
    for (frames, labels), ids, last in zip(videos, [a, b], [294, 19], strict=True):
        assert frames.shape == (20, H, W, 3) and frames.dtype == np.uint8
        assert labels.shape == (20, H, W) and labels.dtype == np.uint8
        assert frames[:, 0, 0, 0].tolist() == [f % 256 for f in range(last - 19, last + 1)]
        assert (labels[:-1] == 255).all()
        np.testing.assert_array_equal(labels[-1], expected_train_ids(ids))


def test_fewer_frames_and_explicit_ids(tmp_path):
    write_labelled_frame(tmp_path, "val", "frankfurt_000000_000294", seed=0)
    write_labelled_frame(tmp_path, "val", "lindau_000001_000019", seed=1)
    ((frames, labels),) = list(
        cityscapes.videos(tmp_path, "val", num_frames=5, ids=["lindau_000001_000019"])
    )
    assert frames[:, 0, 0, 0].tolist() == [15, 16, 17, 18, 19]
    assert labels.shape == (5, H, W)


def test_missing_sequence_frame(tmp_path):
    write_labelled_frame(tmp_path, "val", "frankfurt_000000_000294", seed=0, first=10)
    with pytest.raises(FileNotFoundError, match=r"frankfurt_000000_000275_leftImg8bit\.png"):
        next(cityscapes.videos(tmp_path, "val"))


def test_size_mismatch(tmp_path):
    write_labelled_frame(tmp_path, "val", "frankfurt_000000_000294", seed=0, frame_hw=(H, W + 1))
    with pytest.raises(ValueError, match=r"labelIds\.png is 8x10.*8x11"):
        cityscapes.read_snippet(tmp_path, "val", "frankfurt_000000_000294")


def test_colour_label_refused(tmp_path):
    write_labelled_frame(tmp_path, "val", "frankfurt_000000_000294", seed=0)
    path = tmp_path / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"
    Image.open(path).convert("RGB").save(path)
    with pytest.raises(ValueError, match=r"_color\.png"):
        cityscapes.read_label(tmp_path, "val", "frankfurt_000000_000294")


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit_sequence/val.*cityscapes-dataset"):
        cityscapes.videos(tmp_path, "val")
    write_labelled_frame(tmp_path, "val", "frankfurt_000000_000294", seed=0)
    with pytest.raises(FileNotFoundError, match="gtFine/train"):
        cityscapes.labelled_frame_ids(tmp_path, "train")
    with pytest.raises(ValueError, match="num_frames"):
        cityscapes.videos(tmp_path, "val", num_frames=21)
    with pytest.raises(ValueError, match="bad frame id"):
        cityscapes.videos(tmp_path, "val", ids=["frankfurt_294"])


# ---------------------------------------------------------------------------------------------
# the protocol (cityscapes-clockwork-exp)

FRAME_IDS = [f"aachen_00000{i}_{100 + 40 * i:06d}" for i in range(5)]


@pytest.fixture
def city_root(tmp_path):
    for seed, frame_id in enumerate(FRAME_IDS):
        write_labelled_frame(tmp_path, "val", frame_id, seed)
    return tmp_path


def _sched(spec):
    from cwfcn import clockwork

    return clockwork.parse_schedule(spec)


def _reference_coins(n: int, cell: int) -> list[bool]:
    """The notebook's draws: random.seed(0xCAFFE) once (cell 0), then one random.random()
    per labelled frame in cell 9 (skip), the next n in cell 11 (alternating); True (< 0.5)
    means the previous frame ran in full and the labelled one is the cached step."""
    import random

    random.seed(0xCAFFE)
    draws = [random.random() for _ in range(2 * n)]
    return [d < 0.5 for d in draws[cell * n : (cell + 1) * n]]


def _last_frames(clip) -> list[int]:
    return [int(f.mean()) for f in clip.frames]


@pytest.mark.parametrize(("spec", "cell"), [("skip", 0), ("alternating", 1)])
def test_the_seeded_coin_picks_each_labelled_frames_phase(city_root, spec, cell):
    clips = list(cityscapes.clips(city_root, _sched(spec)))
    coins = _reference_coins(len(FRAME_IDS), cell)
    assert len(clips) == len(FRAME_IDS)
    for clip, frame_id, previous in zip(clips, FRAME_IDS, coins, strict=True):
        last = int(frame_id.rsplit("_", 1)[1])
        want = [last - 1, last] if previous else [last]
        assert _last_frames(clip) == [f % 256 for f in want]
        assert clip.scored == clip.counted == (len(clip.frames) - 1,)
        np.testing.assert_array_equal(clip.labels[-1], cityscapes.read_label(city_root, "val",
                                                                             frame_id))
    assert any(coins) and not all(coins)  # both phases occur: the test can tell them apart


def test_other_phase_policies(city_root):
    clips = list(cityscapes.clips(city_root, _sched("skip"), "all"))
    assert [len(c.frames) for c in clips] == [1, 2] * len(FRAME_IDS)
    clips = list(cityscapes.clips(city_root, _sched("exponential"), "fixed:3"))
    assert all(len(c.frames) == 4 for c in clips)
    # "clip": from the snippet's first frame, 19 frames before the labelled one.
    clips = list(cityscapes.clips(city_root, _sched("exponential"), "clip"))
    assert all(len(c.frames) == 19 % 4 + 1 for c in clips)
    with pytest.raises(ValueError, match="bad phase"):
        cityscapes.clips(city_root, _sched("skip"), "sometimes")


def test_adaptive_runs_the_snippet_and_counts_the_first_frame_in_the_denominator(city_root):
    """Cell 13: a full run on the first of 20 frames, then the clock on 19; only the last is
    scored, and `Updated n/20`: the forced run counts in the denominator only."""
    from cwfcn import evaluation, model

    clips = list(cityscapes.clips(city_root, _sched("adaptive:0")))
    assert all(len(c.frames) == 20 and c.scored == (19,) for c in clips)
    assert all(c.counted == tuple(range(1, 20)) and c.denominator == 20 for c in clips)
    (oracle,) = list(cityscapes.clips(city_root, _sched("oracle"), ids=FRAME_IDS[:1]))
    assert len(oracle.frames) == 1  # cell 6: the labelled frame alone
    from flax import nnx

    net = model.narrow_fcn8s(19, rngs=nnx.Rngs(0))
    row = evaluation.evaluate_schedule(net, clips[:2], "adaptive:0",
                                       mean_bgr=cityscapes.DATASET.mean_bgr)
    assert row["fired"] == [1.0, 1.0, 1.0]  # theta 0: every frame
    assert row["fired_ref"][-1] == pytest.approx(19 / 20)


def test_read_gives_the_20_frames_to_each_labelled_one(city_root, monkeypatch):
    videos = cityscapes.snippets(city_root, "val")
    assert len(videos) == 5
    video = videos[1]  # aachen_000001_000140
    assert video.key == FRAME_IDS[1] and video.times == tuple(range(121, 141))
    assert video.labelled == video.scored == (19,)
    np.testing.assert_array_equal(video.label(19), cityscapes.read_label(city_root, "val",
                                                                         FRAME_IDS[1]))
    reads = []
    real = cityscapes.read_rgb
    monkeypatch.setattr(cityscapes, "read_rgb", lambda path, fix: reads.append(path.name) or
                        real(path, fix))
    (oracle,) = list(protocol.clips(videos[:1], cityscapes.form, _sched("oracle"), "coin"))
    assert reads == ["aachen_000000_000100_leftImg8bit.png"]  # the labelled frame alone
    assert _last_frames(oracle) == [100]
