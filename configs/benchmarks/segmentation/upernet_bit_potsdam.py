# UPerNet on a BiT ResNet-v2 (GroupNorm + weight standardisation; our twin ResNetV2BiT), ISPRS
# Potsdam. The four stage maps are normalised as the network itself uses them next
# (norm_outputs, see benchmarks/models/resnetv2.py); GroupNorm keeps no batch statistics, so
# small batches need no care.
#   python benchmarks/run.py --task segmentation \
#       --config configs/benchmarks/segmentation/upernet_bit_potsdam.py --checkpoint bit_m_r50x1.pth
_base_ = ['./_base_/upernet_converted.py']

model = dict(backbone=dict(type='ConvertedBackbone', out_indices=(0, 1, 2, 3)))
