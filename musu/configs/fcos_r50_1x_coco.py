# Table 1's "FCOS": mmdet's vanilla FCOS R-50 on the suite's 90k schedule.
_base_ = './_base_/fcos_r50_caffe_90k.py'
