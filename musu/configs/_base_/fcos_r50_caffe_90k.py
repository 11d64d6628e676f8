# FCOS R-50 (caffe, GN head) on the paper's iteration schedule: 90k iterations
# at batch 16 (8 GPUs x 2), warm-up 500, steps at 60k and 80k, 800x1333 + flip,
# inference at score 0.05 and NMS 0.6 (Section 4.1). Every model config of the
# suite inherits it, so baselines and MuSu share data, schedule and inference.
_base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'

max_iters = 90000
lr_steps = [60000, 80000]
val_interval = 90000
checkpoint_interval = 5000

train_dataloader = dict(batch_size=2, num_workers=2, sampler=dict(type='InfiniteSampler', shuffle=True))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=lr_steps, gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=checkpoint_interval, max_keep_ckpts=3),
)
log_processor = dict(by_epoch=False)
model = dict(test_cfg=dict(nms_pre=1000, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.6), max_per_img=100))
auto_scale_lr = dict(enable=False, base_batch_size=16)
