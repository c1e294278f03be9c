"""The contract between the generic trainer and a learning task (instance / semantic / descriptors)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class TrainingTask(Protocol):
    """What :class:`selfsup_perception.core.learning.training.trainer.Trainer` needs from a task.

    * ``name``: 'instance_segmentation' | 'semantic_segmentation' | 'descriptors'; also the
      checkpoint sub-directory.
    * ``build_model()``: a fresh model.
    * ``model_config()``: JSON-serialisable; enough to rebuild the model for inference.
    * ``compute_loss(model, batch)``: (scalar loss tensor with grad, {metric name: float}).
      The trainer adds ``batch['step']`` (int, the global optimizer step) to a shallow copy
      of each batch before calling it, for step-dependent schedules (e.g. co-teaching).

    Optional: ``initialization()`` -> dict, where the weights of the model ``build_model()`` last
    returned came from (random, or a pre-trained backbone and its checkpoint); the trainer writes
    it into each checkpoint's ``meta.json`` as ``initialization`` (tasks/backbone_transfer.py).
    Optional: ``param_groups(model)`` -> list of optimizer groups (``params``, ``lr_scale``,
    ``frozen_steps``) or None for one group; the trainer gives each group ``lr_scale`` x its
    scheduled learning rate, 0 while ``step < frozen_steps`` (a pre-trained backbone's fine-tuning).
    """

    name: str

    def build_model(self) -> torch.nn.Module: ...

    def model_config(self) -> dict: ...

    def compute_loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]: ...
