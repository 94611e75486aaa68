"""Tests for cwfcn.data.youtube on a tiny youtube_masks tree written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cwfcn.data import protocol, youtube

H, W = 8, 10

# VOC2011 class ids, from the VOC devkit's class list (background = 0).
EXPECTED_VOC_ID = {
    "aeroplane": 1,
    "bird": 3,
    "boat": 4,
    "car": 7,
    "cat": 8,
    "cow": 10,
    "dog": 12,
    "horse": 13,
    "motorbike": 14,
    "train": 19,
}


def mask(left_columns: int) -> np.ndarray:
    """Object (255) in the first ``left_columns`` columns, background (0) elsewhere."""
    out = np.zeros((H, W), np.uint8)
    out[:, :left_columns] = 255
    return out


def shot_path(root: Path, shot_id: str) -> Path:
    cls, video, shot = shot_id.split("/")
    return root / "youtube_masks" / cls / "data" / video / "shots" / shot


def write_shot(
    root: Path,
    shot_id: str,
    numbers: list[int],
    frame_name: str = "frame{:04d}.jpg",
    frame_size: tuple[int, int] = (H, W),
) -> None:
    """Masks labels/<n:05d>.jpg (object in the first n % 7 + 2 columns) and their frames.

    ``frame_name`` is a pattern under ``<shot>/images``, or "v1" for the YouTube-Objects v1 tree.
    Frame n is a solid grey of value 10 * n, to tell frames apart after JPEG.
    """
    labels = shot_path(root, shot_id) / "labels"
    labels.mkdir(parents=True)
    for n in numbers:
        Image.fromarray(mask(n % 7 + 2)).save(labels / f"{n:05d}.jpg", quality=100)
        if frame_name == "v1":
            cls, video, shot = shot_id.split("/")
            path = root / "v1" / cls / "data" / video / "shots" / shot / f"frame{n:04d}.jpg"
        else:
            path = shot_path(root, shot_id) / "images" / frame_name.format(n)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*frame_size, 3), 10 * n, np.uint8)).save(path)


def test_voc_ids():
    assert youtube.VOC_ID == EXPECTED_VOC_ID
    assert set(youtube.YOUTUBE_CLASSES) == set(EXPECTED_VOC_ID)


def test_eleven_classes_and_the_prediction_map():
    """datasets/youtube.py: background + the ten; VOC predictions outside them -> 0."""
    assert youtube.CLASSES == ("background", "aeroplane", "bird", "boat", "car", "cat", "cow",
                               "dog", "horse", "motorbike", "train")
    want = [0] * 21
    for yt, name in enumerate(youtube.CLASSES[1:], start=1):
        want[EXPECTED_VOC_ID[name]] = yt
    assert list(youtube.VOC_TO_YOUTUBE) == want
    assert youtube.VOC_TO_YOUTUBE[15] == 0  # person -> background, not a class of its own


@pytest.mark.parametrize("frame_name", ["frame{:04d}.jpg", "{:05d}.png", "{:05d}.jpg", "v1"])
def test_read_shot(tmp_path, frame_name):
    write_shot(tmp_path, "cat/0001/001", [21, 1, 11], frame_name)  # numeric, not write, order
    frames, labels = youtube.read_shot(tmp_path, "cat/0001/001", max_dim=W)
    assert frames.shape == (3, H, W, 3) and frames.dtype == np.uint8
    assert labels.shape == (3, H, W) and labels.dtype == np.uint8
    assert np.abs(frames.mean(axis=(1, 2, 3)) - [10, 110, 210]).max() < 3  # frames 1, 11, 21
    for labels_n, n in zip(labels, [1, 11, 21], strict=True):
        expected = np.where(mask(n % 7 + 2) > 0, 5, 0)  # cat is YouTube class 5
        np.testing.assert_array_equal(labels_n, expected)


def test_frames_and_masks_are_resized_to_a_longer_side_of_500(tmp_path):
    """datasets/youtube.py `resize`: int(dim * 500 / max), frames bilinear, masks nearest,
    then the threshold."""
    labels_dir = shot_path(tmp_path, "dog/0001/001") / "labels"
    labels_dir.mkdir(parents=True)
    grey = np.tile(np.array([0, 20, 200, 10, 16, 255, 0, 30, 14, 100], np.uint8), (7, 1))
    Image.fromarray(grey).save(labels_dir / "00001.png")  # 7 x 10, lossless
    rgb = np.random.default_rng(0).integers(0, 256, (7, 10, 3), dtype=np.uint8)
    v1 = tmp_path / "v1" / "dog" / "data" / "0001" / "shots" / "001"
    v1.mkdir(parents=True)
    Image.fromarray(rgb).save(v1 / "frame0001.png")  # png beside: not the reference's name
    Image.fromarray(rgb).save(v1 / "frame0001.jpg", quality=100)
    frames, labels = youtube.read_shot(tmp_path, "dog/0001/001")
    assert frames.shape == (1, 350, 500, 3) and labels.shape == (1, 350, 500)  # int(7 * 50)
    with Image.open(v1 / "frame0001.jpg") as im:
        want = np.asarray(im.convert("RGB").resize((500, 350), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(frames[0], want)
    cols = np.arange(500) * 10 // 500  # nearest: each source column 50 times
    np.testing.assert_array_equal(labels[0], np.where(grey[0][cols] > 15, 7, 0)[None].repeat(
        350, 0))
    assert youtube.resized_size((281, 500)) == (281, 500)
    assert youtube.resized_size((240, 320)) == (375, 500)
    assert youtube.resized_size((360, 480)) == (375, 500)
    assert youtube.resized_size((100, 30)) == (500, 150)


def test_videos_one_per_shot(tmp_path):
    write_shot(tmp_path, "horse/0002/003", [1, 11])
    write_shot(tmp_path, "cat/0001/001", [1])
    write_shot(tmp_path, "cat/0001/002", [5, 15, 25])
    (shot_path(tmp_path, "cat/0004/001") / "labels").mkdir(parents=True)  # no masks: skipped
    ids = youtube.shot_ids(tmp_path)
    assert ids == ["cat/0001/001", "cat/0001/002", "horse/0002/003"]
    lengths = [(len(f), int(lab.max())) for f, lab in youtube.videos(tmp_path, max_dim=W)]
    assert lengths == [(1, 5), (3, 5), (2, 8)]
    assert youtube.shot_ids(tmp_path, classes=["horse"]) == ["horse/0002/003"]
    ((frames, _),) = list(youtube.videos(tmp_path, ids=["cat/0001/001"], max_dim=W))
    assert len(frames) == 1


def test_threshold(tmp_path):
    labels_dir = shot_path(tmp_path, "dog/0001/001") / "labels"
    labels_dir.mkdir(parents=True)
    grey = np.tile(np.array([0, 15, 16, 127, 128], np.uint8), (H, 2))
    Image.fromarray(grey).save(labels_dir / "00001.png")  # lossless, to test exact values
    images = labels_dir.parent / "images"
    images.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(images / "frame0001.jpg")
    _, labels = youtube.read_shot(tmp_path, "dog/0001/001", max_dim=W)
    assert labels[0, 0, :5].tolist() == [0, 0, 7, 7, 7]
    _, labels = youtube.read_shot(tmp_path, "dog/0001/001", threshold=127, max_dim=W)
    assert labels[0, 0, :5].tolist() == [0, 0, 0, 0, 7]  # strictly above


def test_frame_of_another_aspect_ratio_is_refused(tmp_path):
    write_shot(tmp_path, "car/0001/001", [1], frame_size=(2 * H, 2 * W))
    frames, labels = youtube.read_shot(tmp_path, "car/0001/001", max_dim=W)  # both to 8 x 10
    assert frames.shape == (1, H, W, 3) and labels.shape == (1, H, W)
    write_shot(tmp_path, "car/0001/002", [1], frame_size=(H, 2 * W))
    with pytest.raises(ValueError, match=r"4x10 after resizing but its mask is 8x10"):
        youtube.read_shot(tmp_path, "car/0001/002", max_dim=W)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="youtube_masks"):
        youtube.shot_ids(tmp_path)
    write_shot(tmp_path, "boat/0001/001", [1, 11])
    (shot_path(tmp_path, "boat/0001/001") / "images" / "frame0011.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"frame 11 .*frame0011\.jpg.*00011\.png"):
        youtube.read_shot(tmp_path, "boat/0001/001")
    with pytest.raises(ValueError, match="bad shot id"):
        youtube.videos(tmp_path, ids=["person/0001/001"])
    with pytest.raises(FileNotFoundError, match="labels"):
        youtube.read_shot(tmp_path, "cow/0001/001")


# ---------------------------------------------------------------------------------------------
# the protocol: which clips each schedule runs (youtube-clockwork-exp, youtube-pipeline-exp)


def write_full_shot(root: Path, shot_id: str, last: int, masks: list[int]) -> None:
    """The real layout: every raw frame 1..last under v1/ (frame n a solid grey of value
    3 * n, to tell frames apart after JPEG), masks under youtube_masks/ at `masks`."""
    cls, video, shot = shot_id.split("/")
    v1 = root / "v1" / cls / "data" / video / "shots" / shot
    v1.mkdir(parents=True)
    for n in range(1, last + 1):
        Image.fromarray(np.full((H, W, 3), 3 * n, np.uint8)).save(v1 / f"frame{n:04d}.jpg")
    labels = shot_path(root, shot_id) / "labels"
    labels.mkdir(parents=True)
    for n in masks:
        Image.fromarray(mask(n % 7 + 2)).save(labels / f"{n:05d}.jpg", quality=100)


def _numbers(clip) -> list[int]:
    """Which raw frames a clip holds, read off their grey values."""
    return [round(float(f.mean()) / 3) for f in clip.frames]


def _sched(spec):
    from cwfcn import clockwork

    return clockwork.parse_schedule(spec)


@pytest.fixture
def shot_root(tmp_path):
    write_full_shot(tmp_path, "cat/0001/001", 45, [1, 11, 21, 31, 41])
    write_full_shot(tmp_path, "dog/0002/001", 15, [5, 15])  # nothing >= 21: not scored
    return tmp_path


def test_stateless_schedules_score_the_labelled_frames_from_21(shot_root):
    for spec in ("oracle", "pool4"):
        (clip,) = list(youtube.clips(shot_root, _sched(spec), max_dim=W))
        assert _numbers(clip) == [21, 31, 41] and clip.scored == (0, 1, 2)
        assert clip.key == "cat/0001/001"
        assert np.array_equal(clip.labels[0], np.where(mask(21 % 7 + 2) > 0, 5, 0))


def test_fixed_schedules_merge_both_phases_of_each_labelled_frame(shot_root):
    """Cells 10 and 12: on f - 10 then f (cached step), summed with the oracle's f."""
    for spec in ("skip", "alternating"):
        clips = list(youtube.clips(shot_root, _sched(spec), max_dim=W))
        assert [_numbers(c) for c in clips] == [[21], [11, 21], [31], [21, 31], [41], [31, 41]]
        assert all(c.scored == (len(c.frames) - 1,) for c in clips)
        assert all((c.labels[:-1] == 255).all() for c in clips)
    clips = list(youtube.clips(shot_root, _sched("exponential"), "fixed:2", max_dim=W))
    assert [_numbers(c) for c in clips] == [[1, 11, 21], [11, 21, 31], [21, 31, 41]]
    clips = list(youtube.clips(shot_root, _sched("skip"), "fixed:3", max_dim=W))  # 3 % 2
    assert [_numbers(c) for c in clips] == [[11, 21], [21, 31], [31, 41]]
    with pytest.raises(ValueError, match="before the shot starts"):
        list(youtube.clips(shot_root, _sched("exponential"), max_dim=W))  # phase 3: f - 30
    with pytest.raises(ValueError, match="--phase all"):
        youtube.clips(shot_root, _sched("skip"), "clip")


def test_adaptive_runs_each_shot_after_a_warm_up_frame(shot_root):
    """Cell 14: a full run on f0 - 10 seeds the clock; every labelled f >= 21 follows."""
    (clip,) = list(youtube.clips(shot_root, _sched("adaptive:0.3"), max_dim=W))
    assert _numbers(clip) == [11, 21, 31, 41]
    assert clip.scored == clip.counted == (1, 2, 3) and clip.denominator == 3
    assert (clip.labels[0] == 255).all()


def test_pipelines_warm_up_each_labelled_frame(shot_root):
    """youtube-pipeline-exp cells 10, 12: full on f - 10 then 2-stage on f; full on f - 20,
    then 3-stage on f - 10 and f (the engine's fill step repeats f - 20)."""
    clips = list(youtube.clips(shot_root, _sched("pipeline2"), max_dim=W))
    assert [_numbers(c) for c in clips] == [[11, 21], [21, 31], [31, 41]]
    clips = list(youtube.clips(shot_root, _sched("pipeline3"), max_dim=W))
    assert [_numbers(c) for c in clips] == [[1, 1, 11, 21], [11, 11, 21, 31], [21, 21, 31, 41]]
    assert all(c.scored == c.counted == (3,) for c in clips)


def test_pipeline3_clip_gives_the_reference_fusion():
    """fr(f-20) + p4(f-10) + p3(f): what the notebook's staged forwards leave in the blobs."""
    from flax import nnx

    from cwfcn import clockwork, model

    net = model.narrow_fcn8s(5, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(0, 60, (1, H, W, 3)).astype(np.float32) for _ in range(3))
    out = clockwork.run(net, np.concatenate([a, a, b, c]), "pipeline3")
    s1a = net.stage1(a)
    s3a = net.stage3(net.stage2(s1a[0])[0])
    s2b = net.stage2(net.stage1(b)[0])
    s1c = net.stage1(c)
    want = np.asarray(net.fuse(s1c[1], s2b[1], s3a, (H, W)))[0]
    np.testing.assert_allclose(np.asarray(out.scores[-1]), want, rtol=0,
                               atol=1e-4 * np.abs(want).max())


def _one_class_net(voc_class: int):
    """A net whose only non-zero score weight is a bias: it predicts `voc_class` everywhere."""
    from flax import nnx

    from cwfcn import model

    net = model.narrow_fcn8s(21, rngs=nnx.Rngs(0))
    for layer in (net.score_fr, net.score_pool4, net.score_pool3):
        layer.kernel.set_value(np.zeros(layer.kernel.shape, np.float32))
        layer.bias.set_value(np.zeros(layer.bias.shape, np.float32))
    net.score_pool3.bias.set_value(np.eye(21, dtype=np.float32)[voc_class] * 100.0)
    return net


@pytest.mark.parametrize(("voc_class", "yt_class"), [(15, 0), (8, 5)])  # person, cat
def test_scores_eleven_classes_with_predictions_mapped(shot_root, voc_class, yt_class):
    """A net that says 'person' everywhere scores as all background over 11 classes (IU of
    background = its share, cat 0: two classes), not as a 21-class person with IU 0."""
    from cwfcn import evaluation

    net = _one_class_net(voc_class)
    clips = youtube.clips(shot_root, _sched("oracle"), max_dim=W)
    row = evaluation.evaluate_schedule(net, clips, "oracle", mean_bgr=youtube.DATASET.mean_bgr,
                                       pred_lut=youtube.VOC_TO_YOUTUBE)
    truth = np.stack([np.where(mask(f % 7 + 2) > 0, 5, 0) for f in (21, 31, 41)])
    cat = float((truth == 5).mean())
    if yt_class == 0:  # IU(bg) = bg pixels / all pixels; IU(cat) = 0
        assert row["mean_iu"] == pytest.approx((1 - cat) / 2)
        assert row["pixel_acc"] == pytest.approx(1 - cat)
    else:
        assert row["mean_iu"] == pytest.approx(cat / 2)
    assert row["frames"] == 3


def test_fraction_fired_counts_the_scored_frames_not_the_warm_up(shot_root):
    from cwfcn import evaluation

    net = _one_class_net(8)
    clips = youtube.clips(shot_root, _sched("adaptive:1"), max_dim=W)  # never fires after t=0
    row = evaluation.evaluate_schedule(net, clips, "adaptive:1", mean_bgr=youtube.DATASET.mean_bgr,
                                       pred_lut=youtube.VOC_TO_YOUTUBE)
    assert row["fired"][-1] == pytest.approx(1 / 4)  # the warm-up's full run, of 4 frames run
    assert row["fired_ref"] == [1.0, 1.0, 0.0]  # the reference: 0 updates of 3 frames


def test_full_rate_shot_starts_at_the_first_labelled_frame(tmp_path):
    write_full_shot(tmp_path, "cat/0001/001", 25, [4, 14, 24])
    frames, labels = youtube.full_rate_shot(tmp_path, "cat/0001/001", max_dim=W)
    assert [round(float(f.mean()) / 3) for f in frames] == list(range(4, 26))
    labelled = [i for i in range(len(labels)) if (labels[i] != 255).any()]
    assert labelled == [0, 10, 20]
    assert youtube.frame_numbers(tmp_path, "cat/0001/001") == list(range(1, 26))


def test_full_rate_source_for_fig7(tmp_path):
    from cwfcn.data import sources

    write_full_shot(tmp_path, "cat/0001/001", 25, [4, 14, 24])
    source = sources.open_source("youtube-full:cat/0001/001", data_dir=str(tmp_path))
    assert source.pred_lut == youtube.VOC_TO_YOUTUBE and source.num_classes == 11
    (clip,) = list(source.clips(_sched("adaptive-pixel:0.1")))
    assert len(clip.frames) == 22 and clip.frames.shape[1:3] == (400, 500)
    assert clip.scored == (0, 10, 20) and clip.counted == tuple(range(1, 22))


def test_read_holds_the_scored_frames_and_those_10_and_20_back(shot_root, monkeypatch):
    write_full_shot(shot_root, "horse/0001/001", 40, [5, 22, 37])
    videos = youtube.shots(shot_root, max_dim=W)
    assert [v.key for v in videos] == ["cat/0001/001", "horse/0001/001"]  # dog: nothing >= 21
    cat, horse = videos
    # cat: scored 21, 31, 41; back 10 and 20 from them: 1, 11 (masked too, not scored).
    assert (cat.times, cat.labelled, cat.scored) == ((1, 11, 21, 31, 41), (0, 1, 2, 3, 4),
                                                     (2, 3, 4))
    # horse: scored 22 (back: 12, 2) and 37 (back: 27, 17, 7); 5 is no frame's past.
    assert (horse.times, horse.labelled, horse.scored) == ((2, 7, 12, 17, 22, 27, 37),
                                                           (4, 6), (4, 6))
    np.testing.assert_array_equal(horse.label(6), np.where(mask(37 % 7 + 2) > 0, 8, 0))
    reads = []
    real = youtube.read_frame
    monkeypatch.setattr(youtube, "read_frame", lambda root, shot_id, n, max_dim: reads.append(n)
                        or real(root, shot_id, n, max_dim))
    clips = list(protocol.clips(youtube.shots(shot_root, ["horse/0001/001"], max_dim=W),
                                 youtube.form, _sched("pipeline2"), "all"))
    assert [_numbers(c) for c in clips] == [[12, 22], [27, 37]] and sorted(reads) == [12, 22,
                                                                                      27, 37]


def test_full_rate_read_holds_every_frame_from_the_first_labelled(tmp_path):
    write_full_shot(tmp_path, "cat/0001/001", 25, [4, 14, 24])
    (video,) = youtube.full_rate_shots(tmp_path)  # read nothing but the listings
    assert video.times == tuple(range(4, 26))
    assert video.labelled == video.scored == (0, 10, 20)
