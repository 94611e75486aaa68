"""Shared base config: FCN-8s on VGG16, clockwork evaluation; the other configs state only
what differs. The data set's facts (its classes, its mean) come from its record
(`cwfcn.data.datasets`), not from here."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.arch = "fcn8s"  # or a truncated baseline: "pool4", "pool3" (model.ARCHS)
    config.model.num_classes = 0  # 0: the data set's (datasets.net_classes); tiny sets 5
    config.model.widths = "vgg16"  # or "narrow": same topology, few channels (tests)
    config.model.dropout_rate = 0.5
    config.model.zero_init_scores = True  # FCN zero-initialises the score layers
    config.model.init = ""  # weights for the convs: "vgg16_onnx" (ImageNet), a file, or none

    config.data = ml_collections.ConfigDict()
    # "synthetic"; or whole images, batch 1: "voc" (a VOC-layout directory), "sbd"
    # (benchmark_RELEASE), "nyud" (FCN's nyud layout), "cityscapes" (gtFine + sequences),
    # or a prepared set "tfds:NAME/CONFIG:SPLIT" (data.root: its TFDS data dir)
    config.data.name = "synthetic"
    config.data.root = "sample"  # the data set's directory; "voc": "sample" is the embedded one
    config.data.split = "val"  # the training split ("voc": under ImageSets/Segmentation)
    config.data.val_root = ""  # validation directory ("" = data.root; "sbd": a VOCdevkit)
    config.data.val_split = "val"  # validation split ("sbd": a VOC2011 split, e.g. seg11valid)
    config.data.num_val = 8  # synthetic: held-out validation scenes (steps 10**6 ..)
    config.data.size = 256  # synthetic scenes: frame height and width
    config.data.shift = 16  # px per frame of the translated video (paper: 16 and 32)
    config.data.num_frames = 6  # per translated video; frames 2.. are scored
    config.data.num_videos = 4
    config.data.workers = 0  # training input: worker processes reading ahead; 0 = in-process

    config.clock = ml_collections.ConfigDict()
    config.clock.boundary_radius = 5  # the paper's 10-px boundary band

    config.optim = ml_collections.ConfigDict()
    config.optim.name = "sgd"  # FCN: SGD with high momentum; or "adam"
    config.optim.learning_rate = 1e-4  # for the pixel-mean loss (train_lib.loss_fn)
    config.optim.momentum = 0.99
    config.optim.weight_decay = 5e-4
    config.optim.train_upsampling = False  # FCN fixes upscore2/upscore_pool4 (lr_mult 0)
    # False: the VGG convolutions stay as initialised, and their maps are computed once per
    # distinct input (train_lib.head_step): a small set then trains in a fraction of the time
    config.optim.train_trunk = True

    config.train = ml_collections.ConfigDict()
    config.train.steps = 100
    config.train.batch_size = 1  # FCN trains with batch size one
    config.train.log_every = 10
    config.train.checkpoint_every = 50  # steps between saves (and one at the end)
    config.train.keep_checkpoints = 3
    config.train.save_final_optimizer = True  # False: the last checkpoint holds the net only
    config.train.eval_every = 0  # steps between validation passes (mean IU); 0 = off
    # Minutes the training takes on a 2-core CPU (bench/first_run.py), for the notice that
    # evaluate.py gives before it trains a config's model; 0: not measured
    config.train.expected_minutes = 0.0
    return config
