"""The sample model: FCN-8s from ImageNet VGG16 convolutions, fine-tuned on the sample photos.

The embedded sample (`cwfcn.data.samples`) has three labelled VOC photos; a minute of
training on 2 CPU cores (the head only, on the fixed ImageNet convolutions' maps) makes a
net that segments them, so that `evaluate.py` shows real segmentations out of the box. It
is a demonstration, not a PASCAL model: for the paper's numbers load the authors' FCN-8s
(`--checkpoint fcn8s-heavy-pascal.caffemodel`).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.init = "vgg16_onnx"  # ImageNet convolutions; fc6/fc7 start random
    config.model.dropout_rate = 0.0  # three images: dropout only slows the fit down
    config.data.name = "voc"
    # fc6/fc7 start random and large next to the Caffe-scale VGG features: plain SGD
    # diverges at any useful rate, Adam's per-weight steps do not.
    config.optim.name = "adam"
    config.optim.learning_rate = 2e-5
    config.optim.weight_decay = 0.0
    # Unlike FCN (fixed bilinear upsamplers), the demonstration also fits the upsamplers:
    # three photos, minutes of training; this keeps the sample model as it was.
    config.optim.train_upsampling = True
    # The ImageNet convolutions stay as they are: their maps of the 6 inputs (3 photos, each
    # flipped or not) are computed once, and the steps train fc6 on (about 1 s a step on 2
    # CPU cores, against 10 s for the whole net; the same quality on the unseen street clip).
    config.optim.train_trunk = False
    config.train.steps = 60  # 20 passes over the 3 photos
    config.train.log_every = 3
    # One checkpoint, at the end, of the net alone (no Adam state): 0.5 GB of cache. A run
    # killed before it loses about a minute of training.
    config.train.checkpoint_every = 60
    config.train.keep_checkpoints = 1
    config.train.save_final_optimizer = False
    config.train.expected_minutes = 1.2  # bench/first_run.py, 2-core CPU: 70 s of training
    return config
