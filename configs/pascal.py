"""PASCAL VOC as FCN-8s: trained on SBD train (8498 images), validated on VOC2011 seg11valid.

    python train.py --config configs/pascal.py \\
        --config.data.root=DATA/benchmark_RELEASE --config.data.val_root=DATA/VOCdevkit \\
        --workdir runs/pascal

`cwfcn.data.voc.download_sbd` and `cwfcn.data.voc.download` fetch both data sets and return
these roots. As FCN: whole images, batch one, SGD with momentum 0.99, weight decay 5e-4,
fixed bilinear upsamplers, convolutions from ImageNet VGG16.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.init = "vgg16_onnx"  # ImageNet VGG16 (the embedded sample's); or a weight file
    config.data.name = "sbd"
    config.data.root = "benchmark_RELEASE"  # SBD: the directory holding dataset/
    config.data.split = "train"
    config.data.val_root = "VOCdevkit"  # VOC2011: the directory holding VOC2011/
    config.data.val_split = "seg11valid"  # the 736 VOC2011 val images not in SBD train
    # FCN-8s at once: lr 1e-10 on the per-pixel *sum*; the mean loss (train_lib.loss_fn)
    # scales gradients by 1 / pixels (~500 x 375 = 1.9e5 on VOC), hence 1e-10 * 1.9e5.
    config.optim.learning_rate = 2e-5
    config.train.steps = 300_000  # ~35 epochs of SBD train
    config.train.log_every = 100
    config.train.checkpoint_every = 4000
    config.train.eval_every = 8498  # one validation pass per epoch
    return config
