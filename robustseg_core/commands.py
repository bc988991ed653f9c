"""Entry points of the library's console scripts (setup.py): each imports its module only when it runs, so
Ctrl-C in the seconds torch takes to import is one line, not a traceback (``cli.start``)."""

from .cli import entry_points

__getattr__ = entry_points({
    "generate_dataset": "robustseg_core.sim.generate",
    "pretrain_encoder": "robustseg_core.training.pretrain_encoder",
    "train_teacher": "robustseg_core.training.train_teacher",
    "train_student": "robustseg_core.training.train_student",
    "evaluate": "robustseg_core.evaluation.evaluate",
    "export_checkpoint": "robustseg_core.training.export",
    "average_checkpoints": "robustseg_core.training.average",
    "recalibrate_bn": "robustseg_core.training.recalibrate_bn",
    "export_onnx": "robustseg_core.deploy.export",
})
