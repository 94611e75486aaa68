"""The paper's truncated latency baselines on PASCAL VOC: the pool4 or pool3 net.

    python train.py --config configs/pascal_baseline.py:pool4 \\
        --config.model.init=fcn8s-heavy-pascal.caffemodel --workdir runs/pascal-pool4

clockwork-fcn nets/net-pool4.py and net-pool3.py (weights voc-fcn-pool4.caffemodel and
voc-fcn-pool3.caffemodel): VGG16 cut after pool4 (pool3), a score layer on that pool and a
fixed bilinear upsampling (`model.TruncatedFCN`), trained on their own ("fine-tuned for
separate output predictions", the paper's Table 1). They start from FCN-8s's convolutions:
`model.init` is an FCN-8s weight file or the workdir of `configs/pascal.py`. The paper does
not say how long they were trained; the schedule here is PASCAL FCN-8s's, shortened.
"""

from configs import pascal


def get_config(arch: str = "pool4"):
    config = pascal.get_config()
    config.model.arch = arch  # "pool4" (stages=2) or "pool3" (stages=1)
    config.model.init = "fcn8s-heavy-pascal.caffemodel"  # FCN-8s's convolutions
    config.train.steps = 100_000
    return config
