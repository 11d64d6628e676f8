# MuSu R-101 2x (Table 6): 180k iterations, steps at 120k and 160k, shorter
# side drawn from [640, 800], #A = 3.
_base_ = './musu_r50_1x_coco.py'

max_iters = 180000
model = dict(
    backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://detectron/resnet101_caffe')),
    bbox_head=dict(num_anchors=3))
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    # RandomResize draws the shorter side uniformly from [640, 800] (mmdet's own
    # ms-640-800 configs pick one of the two ends only).
    dict(type='RandomResize', scale=[(1333, 640), (1333, 800)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[120000, 160000], gamma=0.1),
]
