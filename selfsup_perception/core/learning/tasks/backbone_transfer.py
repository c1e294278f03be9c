"""Start a task's network from the backbone of another task's checkpoint (pre-train -> fine-tune).

The robot's own camera moves give registered view pairs; region consistency (Barlow Twins on
matched regions, ``tasks/region_consistency.py``) or the cycle-correspondence descriptor loss
(``tasks/descriptors.py``) pre-train a network on them without labels. Every network of this
stack is a :class:`~selfsup_perception.core.learning.models.backbone.Backbone` plus heads, so
the instance network can start from that pre-trained backbone and fine-tune on the interaction
labels (its heads start from random weights).

The source is an ordinary checkpoint version directory of any task (``<root>/<task>/vNNNNN``;
a task directory ``<root>/<task>`` means its newest valid version). It is read like serving
reads it -- ``meta.json`` checked against the schema, the model rebuilt from its metadata,
weights from safetensors -- and its first backbone is taken (``net_a``'s of a co-teaching
pair). Compatibility is the backbone's config, checked field by field
(:func:`~selfsup_perception.core.learning.models.backbone.load_backbone_weights`): the
defaults of the semantic network (``SemanticSegConfig.widths``) equal the instance network's,
a descriptor network needs ``DescriptorNetConfig(backbone=InstanceSegConfig().backbone_config())``,
an instance network with ``use_depth`` (4 input channels) takes no RGB backbone.

:func:`initialize_backbone` returns the provenance that the trainer writes into every
checkpoint's ``meta.json`` as ``initialization`` (``Trainer.save_checkpoint``)::

    {"backbone": "random"}
    {"backbone": "pretrained", "source": {"path", "task", "version", "step", "created",
     "sha256" (of model.safetensors), "initialization" (the source's own, when it has one)},
     "backbone_config": {...}}
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from selfsup_perception.core.learning.models.backbone import (
    BackboneConfig,
    BackboneMismatchError,
    backbone_weights,
    load_backbone_weights,
)
from selfsup_perception.core.learning.serving import checkpoints as ckpt

__all__ = ["BackboneMismatchError", "PretrainedBackbone", "RANDOM_INIT", "initialize_backbone",
           "read_pretrained_backbone", "resolve_checkpoint_version"]

RANDOM_INIT = {"backbone": "random"}


@dataclass(frozen=True)
class PretrainedBackbone:
    config: BackboneConfig
    state: dict[str, torch.Tensor]
    source: dict  # provenance: path, task, version, step, created, sha256[, initialization]


def resolve_checkpoint_version(path: str | Path) -> Path:
    """The version directory meant by ``path``: itself if it holds ``meta.json``, else the newest valid
    version of the task directory ``path`` (``<root>/<task>``). ValueError if there is none."""
    path = Path(path)
    if (path / ckpt.META_FILE).is_file():
        return path
    if path.is_dir():
        info = ckpt.latest_version(path.parent, path.name)
        if info is not None:
            return info.path
    raise ValueError(f"no checkpoint at {path}: give a version directory (<root>/<task>/vNNNNN, with meta.json) "
                     f"or a task directory (<root>/<task>) holding a valid version")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_pretrained_backbone(path: str | Path) -> PretrainedBackbone:
    """The backbone (config, weights, provenance) of the checkpoint at ``path``; ValueError if unusable."""
    version_dir = resolve_checkpoint_version(path)
    try:
        model, meta = ckpt.load_model_for_inference(version_dir)
    except ckpt.CheckpointError as e:
        raise ValueError(f"cannot read a pre-trained backbone from {version_dir}: {e}") from e
    try:
        config, state = backbone_weights(model)
    except ValueError as e:
        raise ValueError(f"{version_dir} ({meta['task']}) holds no backbone: {e}") from e
    source = {"path": str(version_dir.resolve()), "task": meta["task"], "version": int(meta["version"]),
              "step": int(meta["step"]), "created": meta.get("created"),
              "sha256": _sha256(version_dir / ckpt.MODEL_FILE)}
    if isinstance(meta.get("initialization"), dict):
        source["initialization"] = meta["initialization"]
    return PretrainedBackbone(config, state, source)


def initialize_backbone(model: torch.nn.Module, pretrained_backbone: str | Path | None) -> dict:
    """Load the backbone of ``pretrained_backbone`` into every backbone of ``model`` (nothing for ""/None).

    Returns the provenance for ``meta.json`` (module docstring). Raises
    :class:`BackboneMismatchError` (a ValueError) when the source's backbone config differs from
    the model's, ValueError when there is no usable checkpoint at the path.
    """
    if not pretrained_backbone:
        return dict(RANDOM_INIT)
    pre = read_pretrained_backbone(pretrained_backbone)
    where = f"{pre.source['path']} ({pre.source['task']} v{pre.source['version']})"
    load_backbone_weights(model, pre.config, pre.state, source=where)
    return {"backbone": "pretrained", "source": pre.source, "backbone_config": pre.config.to_dict()}
