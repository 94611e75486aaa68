"""Synthetic scenes: reproducible, labelled, each class drawn in its own colour."""

import numpy as np

from cwfcn.data import synthetic


def test_scene_shapes_classes_and_colours():
    image, label = synthetic.scene(np.random.default_rng(3), 40, 50, num_classes=6)
    assert image.shape == (40, 50, 3) and image.dtype == np.uint8
    assert label.shape == (40, 50) and label.dtype == np.uint8
    assert label.max() < 6 and (label == 0).any() and (label > 0).any()
    # The colour of a class is its palette entry plus noise: class means differ widely.
    means = {c: image[label == c].mean(0) for c in np.unique(label)}
    for a in means:
        for b in means:
            if a < b:
                assert np.abs(means[a] - means[b]).max() > 20, (a, b)


def test_scene_is_reproducible_from_its_generator():
    a = synthetic.scene(np.random.default_rng(7), 32, 32, 4)
    b = synthetic.scene(np.random.default_rng(7), 32, 32, 4)
    c = synthetic.scene(np.random.default_rng(8), 32, 32, 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_scenes_are_the_same_in_any_order():
    """Video i of `scenes` is the i-th drawn from one seeded generator, however visited."""
    kw = dict(seed=3, num_videos=3, size=12, shift=2, num_frames=4, num_classes=5)
    rng = np.random.default_rng(3)
    drawn = [synthetic.scene(rng, 12 + 2 * 3, 12, 5) for _ in range(3)]
    videos = synthetic.scenes(**kw)
    for i in (2, 0, 1, 2):
        video = videos[i]
        np.testing.assert_array_equal(video.frames[0], drawn[i][0][:12])  # the first window
        np.testing.assert_array_equal(video.label_maps()[3], drawn[i][1][6:])  # the last
        assert video.scored == (2, 3) and video.key == f"scene {i}"
