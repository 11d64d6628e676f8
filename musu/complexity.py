"""Parameters and FLOPs counted the way the paper's toolchain counted them.

Table 7's numbers come from mmdetection 2.x's ``tools/analysis_tools/get_flops.py``,
which runs the backbone, neck and head once on a (3, 1333, 800) tensor and
adds per-module counts by mmcv 1.x's rules (a multiply-add is one FLOP):
conv = output elements x kernel size x input channels / groups (+ output
elements for a bias), linear = in x out (+ out), norm layers = input elements
(x2 with affine parameters), activations, pooling and upsampling = elements.
mmcv 2 dropped that counter; this module re-implements those rules with
forward hooks so the figures are comparable with the paper's.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

_ACTIVATIONS = (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
          nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)


def _module_flops(module: nn.Module, inputs, output) -> int:
    x = inputs[0] if inputs else None
    if isinstance(module, nn.Conv2d) and type(module).__name__ in ("Conv2d",):
        out = output
        batch = out.shape[0]
        out_elems = out.shape[2] * out.shape[3]
        kernel = module.kernel_size[0] * module.kernel_size[1]
        per_position = kernel * module.in_channels // module.groups * module.out_channels
        flops = per_position * out_elems * batch
        if module.bias is not None:
            flops += module.out_channels * out_elems * batch
        return int(flops)
    if isinstance(module, nn.Linear):
        n = x.numel() // x.shape[-1]
        return int(n * module.in_features * module.out_features + (n * module.out_features if module.bias is not None
                                                                   else 0))
    if isinstance(module, _NORMS):
        affine = getattr(module, "affine", getattr(module, "elementwise_affine", False))
        return int(x.numel() * (2 if affine else 1))
    if isinstance(module, _ACTIVATIONS) or isinstance(module, _POOLS):
        return int(x.numel())
    if isinstance(module, nn.Upsample):
        return int(output.numel())
    return 0


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """mmcv 1.x counted parameters with ``requires_grad`` (frozen stem, stage 1 and BN excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, input_shape: Tuple[int, int] = (1333, 800)) -> int:
    """FLOPs of ``model._forward`` (backbone, neck, head; no post-processing) on one image.

    The rules need shapes only, so the count runs on a copy of the model on PyTorch's
    meta device: no arithmetic, which on a CPU job cost seconds at 1333x800 (R-101:
    tens of seconds). A model with an op that has no meta kernel (mmcv's deformable
    convolution) is counted on its own device instead; both give the same number."""
    import copy
    try:
        meta = copy.deepcopy(model).to("meta")
    except Exception:  # noqa: BLE001 - a module that cannot be copied: count on the device
        return _count_flops(model, input_shape)
    try:
        return _count_flops(meta, input_shape)
    except Exception:  # noqa: BLE001 - no meta kernel for one of its ops
        return _count_flops(model, input_shape)


@torch.no_grad()
def _count_flops(model: nn.Module, input_shape: Tuple[int, int]) -> int:
    total = [0]
    hooks = [m.register_forward_hook(lambda mod, i, o: total.__setitem__(0, total[0] + _module_flops(mod, i, o)))
             for m in model.modules() if len(list(m.children())) == 0]
    was_training = model.training
    model.eval()
    try:
        h, w = input_shape
        device = next(model.parameters()).device
        model._forward(torch.zeros(1, 3, h, w, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total[0]


def complexity(model: nn.Module, input_shape: Tuple[int, int] = (1333, 800)) -> dict:
    """``{'params': M, 'params_total': M, 'flops': G}``; Table 7 prints params and FLOPs."""
    return dict(params=count_parameters(model) / 1e6, params_total=count_parameters(model, False) / 1e6,
                flops=count_flops(model, input_shape) / 1e9)
