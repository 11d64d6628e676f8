# FCOS on the smoke setting: the baseline MuSu's tiny runs are compared with.
_base_ = '../_base_/tiny_synthetic.py'
