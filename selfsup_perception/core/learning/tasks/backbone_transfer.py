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
     "backbone_config": {...}, "transferred": ["stem", "stages.0", ...]}

How the pre-trained backbone is fine-tuned is :class:`FineTuneConfig` (``InstanceTaskConfig.fine_tune``):
its learning rate relative to the heads', steps with the backbone held still while the random heads
learn, and how many of its stages are transferred. :func:`fine_tune_param_groups` gives the
optimizer groups; the trainer scales each group's learning rate by its ``lr_scale`` (0 while
``step < frozen_steps``). From random weights none of this applies: one group, as before.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from selfsup_perception.core.learning.models.backbone import (
    BackboneConfig,
    BackboneMismatchError,
    backbone_weights,
    backbones,
    load_backbone_weights,
)
from selfsup_perception.core.learning.serving import checkpoints as ckpt

__all__ = ["BackboneMismatchError", "FineTuneConfig", "PretrainedBackbone", "RANDOM_INIT", "fine_tune_param_groups",
           "initialize_backbone", "read_pretrained_backbone", "resolve_checkpoint_version"]

RANDOM_INIT = {"backbone": "random"}


@dataclass(frozen=True)
class FineTuneConfig:
    """How a pre-trained backbone is fine-tuned (nothing here applies to a network from random weights)."""

    backbone_lr_scale: float = 1.0  # backbone learning rate = this x the trainer's (the heads': 1x)
    # backbone learning rate 0 for the first steps: the random heads learn on the pre-trained features first.
    # 100: chosen on validation scenes (bench/label_efficiency.py --eval-split validation, docs/learning.md)
    freeze_backbone_steps: int = 100
    # stages after the stem that are transferred: -1 all; k >= 0 the stem and stages.0 .. stages.(k-1),
    # the later stages keep their random initialisation
    transfer_stages: int = -1

    def __post_init__(self) -> None:
        if not self.backbone_lr_scale >= 0:
            raise ValueError(f"backbone_lr_scale must be >= 0, got {self.backbone_lr_scale}")
        if self.freeze_backbone_steps < 0:
            raise ValueError(f"freeze_backbone_steps must be >= 0, got {self.freeze_backbone_steps}")
        if self.transfer_stages < -1:
            raise ValueError(f"transfer_stages must be -1 (all) or >= 0, got {self.transfer_stages}")

    def to_dict(self) -> dict:
        return asdict(self)


def fine_tune_param_groups(model: torch.nn.Module, config: FineTuneConfig) -> list[dict]:
    """Optimizer parameter groups: every backbone's parameters (``lr_scale`` = ``config.backbone_lr_scale``,
    ``frozen_steps`` = ``config.freeze_backbone_steps``), then the rest (the heads, scale 1). Parameters
    without ``requires_grad`` are left out; a model without a backbone gives one group."""
    in_backbone = {id(p) for bb in backbones(model) for p in bb.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    backbone = [p for p in trainable if id(p) in in_backbone]
    heads = [p for p in trainable if id(p) not in in_backbone]
    groups = [{"name": "heads", "params": heads, "lr_scale": 1.0, "frozen_steps": 0}]
    if backbone:
        groups.insert(0, {"name": "backbone", "params": backbone, "lr_scale": float(config.backbone_lr_scale),
                          "frozen_steps": int(config.freeze_backbone_steps)})
    return [g for g in groups if g["params"]]


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


def _kept_prefixes(num_stages: int, transfer_stages: int) -> list[str]:
    """State-dict prefixes of a backbone's transferred parts (``stem.``, ``stages.0.``, ...)."""
    k = num_stages if transfer_stages < 0 else min(transfer_stages, num_stages)
    return ["stem."] + [f"stages.{i}." for i in range(k)]


def initialize_backbone(model: torch.nn.Module, pretrained_backbone: str | Path | None,
                        transfer_stages: int = -1) -> dict:
    """Load the backbone of ``pretrained_backbone`` into every backbone of ``model`` (nothing for ""/None).

    ``transfer_stages`` (:class:`FineTuneConfig`): -1 loads the whole backbone; k >= 0 the stem and
    the first k stages, the later stages keep the weights ``model`` was built with. Returns the
    provenance for ``meta.json`` (module docstring). Raises :class:`BackboneMismatchError` (a
    ValueError) when the source's backbone config differs from the model's, ValueError when there is
    no usable checkpoint at the path.
    """
    if not pretrained_backbone:
        return dict(RANDOM_INIT)
    if transfer_stages < -1:
        raise ValueError(f"transfer_stages must be -1 (all) or >= 0, got {transfer_stages}")
    pre = read_pretrained_backbone(pretrained_backbone)
    where = f"{pre.source['path']} ({pre.source['task']} v{pre.source['version']})"
    targets = backbones(model)
    keep = _kept_prefixes(len(targets[0].stages), transfer_stages) if targets else ["stem."]
    # the untransferred stages' own (random) weights, restored after the strict, checked load
    own = [{k: v.detach().clone() for k, v in bb.state_dict().items() if not k.startswith(tuple(keep))}
           for bb in targets]
    load_backbone_weights(model, pre.config, pre.state, source=where)
    for bb, state in zip(targets, own):
        if state:
            bb.load_state_dict(state, strict=False)
    return {"backbone": "pretrained", "source": pre.source, "backbone_config": pre.config.to_dict(),
            "transferred": [p.rstrip(".") for p in keep]}
