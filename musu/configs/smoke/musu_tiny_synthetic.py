# MuSu on the smoke setting: the same tiny network as fcos_tiny_synthetic.py
# with MuSu's head and assignment.
_base_ = '../_base_/tiny_synthetic.py'

custom_imports = dict(imports=['musu.models'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(
        _delete_=True,
        type='MuSuHead',
        num_classes=3,
        in_channels=64,
        stacked_convs=2,
        feat_channels=64,
        strides=[8, 16, 32, 64, 128],
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        centerness_on_reg=True,
        anchor_seed=0,
        assigner=dict(),  # the paper's settings: musu.core.switches.Switches
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0)))
