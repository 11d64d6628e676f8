# FCOS++ on the smoke setting (center sampling, normalised boxes, centerness on
# the regression tower, GIoU), as fcospp_r50_1x_coco.py does at full scale.
_base_ = '../_base_/tiny_synthetic.py'

model = dict(
    bbox_head=dict(
        norm_on_bbox=True,
        centerness_on_reg=True,
        center_sampling=True,
        conv_bias=True,
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0)))
optim_wrapper = dict(clip_grad=None)
