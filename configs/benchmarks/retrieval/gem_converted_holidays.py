# Instance retrieval on INRIA Holidays with the frozen backbone and pooling of a converted
# single-model checkpoint (Multigrain: ResNet + GeM with its learned p; any other family with its
# own pooling): benchmarks/run.py replaces ConvertedBackbone/ConvertedNeck with what the
# checkpoint holds and loads both with its coverage check.
#   python benchmarks/run.py --task retrieval --config configs/benchmarks/retrieval/gem_converted_holidays.py \
#       --checkpoint multigrain_r50.pth
_base_ = ['./gem_resnet50_holidays.py']
model = dict(
    image_encoder=dict(
        backbone=dict(_delete_=True, type='ConvertedBackbone'),
        neck=dict(_delete_=True, type='ConvertedNeck')))
