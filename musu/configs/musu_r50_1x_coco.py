# MuSu R-50 1x (Tables 1-5 and 7): FCOS's network with implicit objectness,
# trained by mutual supervision. The ablation switches (assigner.alpha / criteria
# / b / theta / tau_cls / tau_ratio / hard, num_anchors, beta) default to the
# paper's, defined in musu.core.switches; Eq. 7's focal settings are loss_cls's.
_base_ = './_base_/fcos_r50_caffe_90k.py'

custom_imports = dict(imports=['musu.models'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(
        _delete_=True,
        type='MuSuHead',
        num_classes=80,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        strides=[8, 16, 32, 64, 128],
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        centerness_on_reg=True,
        dcn_on_last_conv=False,
        anchor_seed=0,
        assigner=dict(),  # the paper's settings: musu.core.switches.Switches
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0)))
