# An mmpretrain ImageClassifier on the backbone of a single-model checkpoint (ms2torch --family:
# gMLP, Multigrain, BiT, DINO, or a mindcv model): benchmarks/run.py replaces 'ConvertedBackbone'
# with the backbone type and arguments the checkpoint's meta holds, and 'ConvertedNeck' with the
# pretraining model's own pooling (GeM with its learned p for Multigrain, none for a ViT's class
# token), loads both with its coverage check, and sets the preprocessor's mean/std from the meta.
_base_ = ['./ringmoe_cls.py']
model = dict(
    backbone=dict(_delete_=True, type='ConvertedBackbone'),
    neck=dict(_delete_=True, type='ConvertedNeck'))
