"""Evaluates clockwork schedules: the paper's metrics, frames fired and time per frame.

    python evaluate.py --schedule adaptive --theta 0.25      # the embedded sample
    python evaluate.py --schedule all --theta 0.05:0.5:0.05 --plot plots/   # Fig. 6, Fig. 7
    python evaluate.py --data video:clip.mp4 --target-rate 0.5 --video-out out.mp4
    python evaluate.py --data video:rtsp://camera:8554/stream --video-out live.mp4   # latency
    python evaluate.py --data video:clip.mp4 --target-ms 40 --calibration-frames 30
    python evaluate.py --schedule all --data pascal-translated:16 --data-dir VOCdevkit \\
        --checkpoint fcn8s-heavy-pascal.caffemodel --config configs/default.py

With no --checkpoint, the config's own model is used: trained once (minutes for the
default configs/sample.py, the sample model) into the cache and reused afterwards.

Multi-host (--coordinator, --num_processes, --process_id, as train.py): process i runs
videos i, i + P, ... and the per-video results are gathered, so the metrics equal one
process's; process 0 alone prints the table and writes --output, --plot and --video_out.
Each process keeps its own resume journal (<output>.p<i>.partial.jsonl); a process that dies
ends the others within distributed.PEER_TIMEOUT_S (30 s), naming it. A multi-host run
does not train: pass --checkpoint, or let a one-process run cache the config's model first.
"""

from absl import flags

from cwfcn import cli, clockwork, distributed, evaluate_lib, schedules
from cwfcn.data import protocol, sources

cli.define_config("evaluate.py", "configs/sample.py")  # a bad --flagfile or --config ends here
flags.DEFINE_string("schedule", "adaptive",
                    "Schedule, comma-separated schedules, or 'all' "
                    f"({', '.join(clockwork.ALL_SCHEDULES)}). {clockwork.SCHEDULE_HELP}. "
                    "The truncated baselines pool4, pool3 use the nets of --baselines.")
flags.DEFINE_string("baselines", None,
                    "The truncated baselines' own weights, e.g. pool3=voc-fcn-pool3.caffemodel,"
                    "pool4=voc-fcn-pool4.caffemodel (a .caffemodel or a train.py --workdir of "
                    "configs/pascal_baseline.py). Without, pool3/pool4 rows use FCN-8s's own "
                    "skip scores and say so ('pool4 (fcn8s)').")
flags.DEFINE_string("phase", None,
                    "Phase of fixed schedules at the scored frames: "
                    f"{protocol.PHASE_HELP}. Default: the data set's reference protocol.")
flags.DEFINE_string("theta", str(clockwork.DEFAULT_THETA),
                    "Threshold of the adaptive clock in [0, 1], or a sweep start:stop:step.")
flags.DEFINE_float("target_rate", None,
                   "Pick theta so that S3 fires on about this fraction of frames, in (0, 1], "
                   "calibrated without labels over the whole data set (as the paper tuned "
                   "it), or on the first --calibration_frames frames.")
flags.DEFINE_float("target_ms", None,
                   "A time budget per frame (ms): turned into --target_rate from the stages' "
                   "measured times on this machine (S3 fires on the fraction that fits).")
flags.DEFINE_integer("rate_window", schedules.DEFAULT_WINDOW,
                     "With --target_rate or --target_ms: each calibrated adaptive schedule also "
                     "runs under a budget that holds S3's firings in every window of this many "
                     "frames within the rate +- --rate_tolerance (a closed-loop controller "
                     "moves theta as the video runs); 0: the calibrated theta alone.")
flags.DEFINE_float("rate_tolerance", schedules.DEFAULT_TOLERANCE,
                   "The budget's band around the target rate, in [0, 1).")
flags.DEFINE_integer("calibration_frames", None,
                     "Calibrate --target_rate on the first N frames of the first video only "
                     "(a live stream's start), not on the whole data set.")
flags.DEFINE_integer("max_frames", None,
                     "Read at most this many frames of a video:PATH (or of a live run).")
flags.DEFINE_bool("live", False,
                  "Run a video:FILE as a live stream: frame by frame, each frame's latency "
                  "measured (p50/p90/p99/max, jitter), every frame passed on. A live source "
                  "(--data video:rtsp://..., video:/dev/video0, video:- for stdin) always runs "
                  "so, keeping only the newest frame when the net falls behind.")
flags.DEFINE_string("plot", None, "Write the trade-off and timeline plots (PNG) here.")
flags.DEFINE_string("video_out", None,
                    "Write the first video's segmentation (last schedule) as an overlay video.")
flags.DEFINE_string("data", "sample", f"Data: {sources.SOURCE_HELP}.")
flags.DEFINE_string("data_dir", None, "Directory of the data set named by --data.")
flags.DEFINE_string("checkpoint", None,
                    "An orbax checkpoint directory (from train.py --workdir) or a weight file "
                    "(.caffemodel, .pth, .onnx). Default: the config's model, trained once.")
flags.DEFINE_enum("dtype", "float32", sorted(clockwork.DTYPES),
                  "Compute dtype of the activations (params stay float32).")
flags.DEFINE_string("output", None, "Write the results as JSON here.")
flags.DEFINE_integer("repeats", 2,
                     "Time each clip's run this many times, back to back: the table gives the "
                     "fastest, and the time fraction's spread over the runs (1: no spread).")
distributed.define_flags()
FLAGS = flags.FLAGS


def evaluate() -> None:
    """The whole job (`evaluate_lib.evaluate`) with the flags' values; in a multi-host run,
    a process that dies ends the others within `distributed.PEER_TIMEOUT_S`, naming it."""
    distributed.initialize_from_flags()
    resume = " (each resumes from its journal)" if FLAGS.output else ""
    with distributed.watch_peers(lambda lost: cli.fail(  # a dead process: the others end too
            "evaluate.py", f"{lost}; rerun all processes{resume}")):
        evaluate_lib.evaluate(
            FLAGS.config, schedule=FLAGS.schedule, theta=FLAGS.theta, data=FLAGS.data,
            data_dir=FLAGS.data_dir, checkpoint_path=FLAGS.checkpoint,
            baselines=FLAGS.baselines, phase=FLAGS.phase, target_rate=FLAGS.target_rate,
            calibration_frames=FLAGS.calibration_frames, max_frames=FLAGS.max_frames,
            dtype=FLAGS.dtype, plot=FLAGS.plot, video_out=FLAGS.video_out,
            output=FLAGS.output, repeats=FLAGS.repeats, target_ms=FLAGS.target_ms,
            rate_window=FLAGS.rate_window, rate_tolerance=FLAGS.rate_tolerance,
            live=FLAGS.live)


if __name__ == "__main__":
    cli.main("evaluate.py", evaluate)
