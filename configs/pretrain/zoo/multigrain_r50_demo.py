# Multigrain's recipe at demo scale: a ResNet-18 Multigrain (GeM p learnt here, so that the
# conversion and the retrieval benchmark carry a learnt p) on the synthetic NWPU-RESISC45,
# 8 images x 3 copies of 64 px per step, 20 steps on a CPU (about 40 s). A smoke run of the same
# code path, not a result.
_base_ = 'multigrain_r50.py'
model = dict(arch='multigrain_resnet18', learn_p=True)
data = dict(
    root=None,
    batch_size=8,
    num_workers=2,
    views=[dict(repeat=3, pipeline=[
        dict(type='random_resized_crop', size=64, scale=(0.25, 1.0), interpolation='bilinear'),
        dict(type='hflip', prob=0.5),
        dict(type='color_jitter', brightness=0.3, contrast=0.3, saturation=0.3, hue=0.0, prob=1.0),
        dict(type='normalize', mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    ])],
)
optim = dict(lr=0.02, base_batch_size=None)  # unscaled: 0.2 x 8 / 170 barely moves in 20 steps, 0.05 diverges
schedule = dict(milestones=(0.3, ))  # 360 images / 8 = 45 steps per epoch: one decay, after step 14
# seed 1: the demo images differ from the benchmarks' synthetic NWPU (seed 0), which a linear probe uses
train = dict(epochs=None, steps=20, log_interval=2, save_interval=10, seed=1, device='CPU', mode='graph')
