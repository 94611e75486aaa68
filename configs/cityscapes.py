"""Cityscapes, the 19 evaluation classes (trainIds): whole 1024 x 2048 frames, batch one.

    python train.py --config configs/cityscapes.py --config.data.root=DATA/cityscapes \\
        --workdir runs/cityscapes

`config.data.root` holds gtFine/ and leftImg8bit_sequence/ (the labelled frame of each
snippet is the training image); validation is the val split.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.init = "vgg16_onnx"
    config.data.name = "cityscapes"
    config.data.root = "cityscapes"
    config.data.split = "train"
    config.optim.learning_rate = 5e-6  # the pixel-mean loss on 2 Mpx frames
    config.train.steps = 100_000
    config.train.log_every = 100
    config.train.checkpoint_every = 2000
    config.train.eval_every = 2975  # one pass per epoch of the 2975 train frames
    return config
