# k-NN classification (DINO's protocol, see knn_ringmoe_tiny_nwpu.py) of a converted single-model
# backbone (gMLP, Multigrain, BiT, DINO, mindcv) on NWPU-RESISC45: benchmarks/run.py replaces
# 'ConvertedBackbone' with the checkpoint's backbone and 'ConvertedNeck' with its own pooling (GeM
# with its learned p for Multigrain; none for a ViT's class token, which is already one vector).
#   python benchmarks/run.py --task classification --config configs/benchmarks/classification/knn_converted_nwpu.py \
#       --checkpoint dino_vit_s16.pth
_base_ = ['./knn_ringmoe_tiny_nwpu.py']
model = dict(
    backbone=dict(_delete_=True, type='ConvertedBackbone'),
    neck=dict(_delete_=True, type='ConvertedNeck'),
    head=dict(in_channels=None))  # run.py sets it from the converted backbone's output width
