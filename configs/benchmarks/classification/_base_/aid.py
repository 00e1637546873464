# AID: <root>/<ClassName>/<classname>_N.jpg, 30 classes x 220-420 images, 600 px.
# Protocol: train on 20% or 50% of each class, test on the rest.
_base_ = ['./scene_data.py']
scene_dataset = 'aid'  # layout and class names: benchmarks/datasets/scene_classification.py
num_classes = 30
train_ratio = 0.2
