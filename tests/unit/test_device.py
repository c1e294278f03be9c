"""Devices (cpu, cuda, cuda:N, auto) and the GPU path: every tensor on the model's device, autocast on CUDA.

The CUDA tests skip on machines without a CUDA device (this one's torch is the CPU build);
on a GPU machine they run the semantic, instance and descriptor serving paths and a training
step on the GPU.
"""

import numpy as np
import pytest
import torch

from selfsup_perception.core.descriptors.matching import compute_descriptor_image
from selfsup_perception.core.learning.device import (
    DeviceUnavailableError,
    autocast,
    grad_scaler,
    resolve_device,
)
from selfsup_perception.core.learning.serving.inference import segment_instances, segment_semantic
from selfsup_perception.core.learning.tasks.instance import InstanceSegmentationTask, InstanceTaskConfig, synthetic_items
from selfsup_perception.core.learning.models.descriptor_net import DescriptorNet, DescriptorNetConfig
from selfsup_perception.core.learning.models.semantic_segmentation import SemanticSegConfig, SemanticSegNet
from selfsup_perception.core.learning.training.trainer import Trainer, TrainerConfig

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason=f"needs a CUDA device (torch {torch.__version__}, "
                                                     f"CUDA build {torch.version.cuda or 'none'}, no GPU here)")


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if HAS_CUDA else "cpu")
    for bad in ("gpu", "cuda:", "cuda:x", "tpu", ""):
        with pytest.raises(ValueError, match="cpu \\| cuda \\| cuda:N \\| auto"):
            resolve_device(bad)
    with pytest.raises(DeviceUnavailableError, match="cuda:99"):
        resolve_device("cuda:99")


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available.*use cpu or auto"):
        resolve_device("cuda")


def test_cpu_keeps_float32_and_a_pass_through_scaler():
    lin = torch.nn.Linear(4, 2)
    with autocast("cpu"):
        assert lin(torch.ones(1, 4)).dtype == torch.float32
    scaler = grad_scaler("cpu")
    loss = lin(torch.ones(1, 4)).sum()
    assert not scaler.is_enabled() and scaler.scale(loss) is loss


def _instance_trainer(device: str, mixed_precision: bool = True) -> Trainer:
    task = InstanceSegmentationTask(InstanceTaskConfig(mask_loss="bce"))
    return Trainer(task, TrainerConfig(device=device, mixed_precision=mixed_precision, log_every=0, warmup_steps=0))


def _batches(n=2):
    from selfsup_perception.core.learning.tasks.instance import collate_samples

    items = synthetic_items(4, height=48, width=64, seed=0)
    while True:
        yield collate_samples(items[:n])


def test_training_with_mixed_precision_on_cpu_is_plain_float32():
    trainer = _instance_trainer("cpu")
    records = trainer.train_steps(_batches(), 2)
    assert len(records) == 2 and all(np.isfinite(r["loss"]) for r in records)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in trainer.model.parameters())


@needs_cuda
def test_training_steps_on_cuda_under_autocast():
    trainer = _instance_trainer("cuda")
    assert trainer.scaler.is_enabled()
    records = trainer.train_steps(_batches(), 3)
    assert records and all(np.isfinite(r["loss"]) for r in records)
    assert all(p.dtype == torch.float32 and p.device.type == "cuda" for p in trainer.model.parameters())


@needs_cuda
def test_serving_paths_take_cpu_images_to_a_cuda_model():
    rgb = (np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)
    semantic = SemanticSegNet(SemanticSegConfig(num_classes=5)).to("cuda").eval()
    classes = segment_semantic(semantic, rgb, (64, 48))  # was: a CPU tensor into a CUDA model
    assert classes.shape == (60, 80) and classes.dtype == np.uint8 and classes.max() < 5
    net = _instance_trainer("cuda").model.eval()
    instances = segment_instances(net, rgb, (64, 48))
    assert all(inst.mask.shape == (60, 80) for inst in instances)
    desc = compute_descriptor_image(DescriptorNet(DescriptorNetConfig(descriptor_dim=8)).to("cuda"), rgb, device="cuda")
    assert desc.shape == (60, 80, 8) and desc.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(desc, axis=2), 1.0, atol=2e-2)  # float16 inside, unit norm out
