# MuSu R-101-DCN 2x (Table 6): DCNv2 in ResNet stages 2-4 and in the last conv
# of each head tower ("following ATSS and PAA").
_base_ = './musu_r101_ms-640-800_2x_coco.py'

model = dict(
    backbone=dict(dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False),
                  stage_with_dcn=(False, True, True, True)),
    bbox_head=dict(dcn_on_last_conv=True))
