"""Every shipped config builds and runs a forward pass; the paper's settings are in them."""
import pytest
import torch

pytest.importorskip("mmcv.ops")
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

import musu.models  # noqa: E402,F401
from musu.configs import available_configs  # noqa: E402
from musu.train import load_config  # noqa: E402

register_all_modules()


@pytest.mark.parametrize("name", available_configs())
def test_config_builds_and_runs(name):
    cfg = load_config(name)
    model = MODELS.build(cfg.model)
    model.eval()
    with torch.no_grad():
        outs = model._forward(torch.zeros(1, 3, 128, 160))
    assert len(outs[0]) == 5  # five pyramid levels


def test_paper_settings():
    r50 = load_config("musu_r50_1x_coco")
    assert r50.train_cfg.max_iters == 90000 and r50.param_scheduler[1].milestones == [60000, 80000]
    assert r50.param_scheduler[0].end == 500 and r50.optim_wrapper.optimizer.lr == 0.01
    assert r50.optim_wrapper.optimizer.momentum == 0.9 and r50.optim_wrapper.optimizer.weight_decay == 1e-4
    assert r50.train_dataloader.batch_size == 2 and r50.auto_scale_lr.base_batch_size == 16
    assert r50.model.test_cfg.score_thr == 0.05 and r50.model.test_cfg.nms.iou_threshold == 0.6
    assert any(t["type"] == "RandomFlip" for t in r50.train_dataloader.dataset.pipeline)
    head = r50.model.bbox_head
    assert head.type == "MuSuHead"
    from musu.models.musu_head import MuSuHead
    built = MuSuHead(**{k: v for k, v in head.to_dict().items() if k != "type"})
    s = built.switches  # the paper's settings, from musu.core.switches
    assert s.alpha == pytest.approx(1 / 3) and s.beta == 4.0 and s.b == 0.1 and s.tau_cls is None
    assert s.tau_ratio == 2.0 and s.num_anchors == 1 and (built.focal_alpha, built.focal_gamma) == (0.25, 2.0)
    r101 = load_config("musu_r101_ms-640-800_2x_coco")
    assert r101.model.backbone.depth == 101 and r101.model.bbox_head.num_anchors == 3
    assert r101.train_cfg.max_iters == 180000 and r101.param_scheduler[1].milestones == [120000, 160000]
    resize = r101.train_dataloader.dataset.pipeline[2]
    assert resize.type == "RandomResize" and resize.scale == [(1333, 640), (1333, 800)]
    dcn = load_config("musu_r101-dcn_ms-640-800_2x_coco")
    assert dcn.model.backbone.dcn.type == "DCNv2" and dcn.model.bbox_head.dcn_on_last_conv
    fpp = load_config("fcospp_r50_1x_coco")
    assert fpp.model.bbox_head.center_sampling and fpp.model.bbox_head.loss_bbox.type == "GIoULoss"


DCN = {"model.bbox_head.dcn_on_last_conv": True}  # DCNv2 in the head, as the R-101-DCN config has it


@pytest.mark.parametrize("options", [{}, DCN], ids=["plain", "dcn"])
def test_flops_counted_on_the_meta_device_are_those_counted_on_the_device(options):
    """Table 7's FLOPs are counted on a meta copy of the model (shapes only, no arithmetic);
    a model with an op that has no meta kernel (mmcv's DCN) is counted on its device."""
    from musu.complexity import _count_flops, count_flops
    model = MODELS.build(load_config("smoke/musu_tiny_synthetic", options).model)
    shape = (256, 192)
    assert count_flops(model, shape) == _count_flops(model, shape) > 0
    assert next(model.parameters()).device.type == "cpu"  # the model itself never left its device
