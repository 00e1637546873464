# k-NN classification (DINO's protocol) of a frozen RingMoE backbone on AID: the NWPU-RESISC45
# k-NN config (knn_ringmoe_tiny_nwpu.py) with AID's classes and split.
# Train ratio 20% (default) or 50%: --cfg-options train_ratio=0.5.
_base_ = ['./knn_ringmoe_tiny_nwpu.py']
scene_dataset = 'aid'  # as _base_/aid.py: layout and class names in benchmarks/datasets/scene_classification.py
num_classes = 30
train_ratio = 0.2
model = dict(head=dict(num_classes=30))
