# NWPU-RESISC45: <root>/<class_name>/<class_name>_NNN.jpg, 45 classes x 700 images, 256 px.
# Protocol: train on 10% or 20% of each class, test on the rest.
_base_ = ['./scene_data.py']
scene_dataset = 'nwpu_resisc45'  # layout and class names: benchmarks/datasets/scene_classification.py
num_classes = 45
train_ratio = 0.1
