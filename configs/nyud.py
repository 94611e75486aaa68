"""NYUDv2, 40 classes (Gupta et al.), as FCN's RGB model: whole images, batch one.

    python train.py --config configs/nyud.py --config.data.root=DATA/nyud --workdir runs/nyud

FCN trained on trainval and reported on test; here train / val keep a held-out set for the
per-epoch validation (override data.split / data.val_split to follow FCN exactly).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.init = "vgg16_onnx"
    config.data.name = "nyud"
    config.data.root = "nyud"  # FCN's nyud layout: data/images, segmentation, <split>.txt
    config.data.split = "train"
    config.optim.learning_rate = 2e-5  # FCN's 1e-10 on the pixel sum, x 425 x 560 pixels
    config.train.steps = 150_000
    config.train.log_every = 100
    config.train.checkpoint_every = 4000
    config.train.eval_every = 5000
    return config
