# gMLP-Ti's recipe at demo scale: the tiny gMLP (64 px, 4 blocks) on the synthetic NWPU-RESISC45,
# 12 steps on a CPU. A smoke run of the same code path, not a result.
_base_ = 'gmlp_ti.py'
model = dict(arch='gmlp_tiny_demo')
data = dict(
    root=None,
    batch_size=16,
    num_workers=2,
    views=[dict(repeat=1, pipeline=[
        dict(type='random_resized_crop', size=64, scale=(0.08, 1.0), interpolation='bicubic'),
        dict(type='hflip', prob=0.5),
        dict(type='rand_augment', num_ops=2, magnitude=9, num_magnitude_bins=11),
        dict(type='normalize', mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    ])],
)
optim = dict(base_batch_size=None)
schedule = dict(warmup_epochs=0, warmup_steps=2)
# seed 1: the demo images differ from the benchmarks' synthetic NWPU (seed 0) that the probes use
train = dict(epochs=None, steps=12, log_interval=2, save_interval=6, seed=1, device='CPU', mode='graph')
