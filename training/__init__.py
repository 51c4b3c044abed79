"""Training, evaluation and ablation tooling for casseg_ros (datasets, configs, metrics).

Entry points::

    python -m training.train --config training/configs/<name>.yaml
    python -m training.evaluate --checkpoint <model.safetensors> --config <cfg.yaml>
    python -m training.ablate --preset context-scenes
"""
