# Table 1's "FCOS++": FCOS with center sampling, normalised boxes, centerness
# on the regression tower and GIoU, as in mmdet's
# fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py.
_base_ = './_base_/fcos_r50_caffe_90k.py'

model = dict(
    data_preprocessor=dict(mean=[103.530, 116.280, 123.675]),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://detectron2/resnet50_caffe')),
    bbox_head=dict(
        norm_on_bbox=True,
        centerness_on_reg=True,
        dcn_on_last_conv=False,
        center_sampling=True,
        conv_bias=True,
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0)))
optim_wrapper = dict(clip_grad=None)
