"""YouTube-Objects (evaluation only): the PASCAL net applied as is, 21 VOC classes, VOC mean.

The paper has no YouTube training split: it scores the PASCAL-trained FCN-8s on the
labelled YouTube-Objects frames. Use this config with evaluate.py and the PASCAL weights:

    python evaluate.py --config configs/youtube.py --data youtube --data_dir DATA/youtube \\
        --checkpoint runs/pascal   (or the authors' fcn8s-heavy-pascal.caffemodel)
"""

from configs import pascal


def get_config():
    config = pascal.get_config()
    config.data.name = "youtube"  # not trainable: training.make_batches refuses it
    config.data.root = "youtube"
    config.train.eval_every = 0
    return config
