# UPerNet on Multigrain's ResNet-50 (mmpretrain ResNet; stages at strides 4-32), ISPRS Potsdam.
#   python benchmarks/run.py --task segmentation \
#       --config configs/benchmarks/segmentation/upernet_multigrain_r50_potsdam.py --checkpoint multigrain_r50.pth
# Any Multigrain depth works: the depth comes from the checkpoint, the head widths from the backbone.
# The pretrained BatchNorm statistics are kept (norm_eval): batches of two crops on one device
# would estimate them badly; mmseg's recipe trains them with SyncBN over 16 crops instead.
_base_ = ['./_base_/upernet_converted.py']

model = dict(backbone=dict(type='ConvertedBackbone', out_indices=(0, 1, 2, 3), norm_eval=True))
