"""Tiny config: the narrow net on small synthetic scenes; seconds on a CPU (tests)."""

from configs import default


def get_config():
    config = default.get_config()
    config.model.num_classes = 5
    config.model.widths = "narrow"
    config.model.zero_init_scores = False  # random score layers: outputs differ per class
    config.data.size = 48
    config.data.shift = 4
    config.data.num_videos = 2
    config.optim.learning_rate = 0.003
    config.optim.momentum = 0.9
    config.train.steps = 4
    config.train.log_every = 2
    config.train.checkpoint_every = 2
    return config
