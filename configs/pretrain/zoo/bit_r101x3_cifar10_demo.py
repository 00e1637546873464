# The R101x3 CIFAR-10 fine-tuning recipe at demo scale: the tiny BiT from scratch on the synthetic
# NWPU-RESISC45 (64 px images cropped to 48, its 45 classes), 12 steps on a CPU. A smoke run, not a result.
_base_ = 'bit_r101x3_cifar10.py'
model = dict(arch='bit_tiny', num_classes=None)
data = dict(
    root=None,
    batch_size=16,
    num_workers=2,
    views=[dict(repeat=1, pipeline=[
        dict(type='resize', size=56, interpolation='bilinear'),
        dict(type='random_crop', size=48),
        dict(type='hflip', prob=0.5),
        dict(type='rand_augment', num_ops=2, magnitude=9, num_magnitude_bins=11),
        dict(type='normalize', mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    ])],
)
optim = dict(lr=1e-3)
schedule = dict(warmup_epochs=0, warmup_steps=2)
ema = dict(decay=0.9)   # short enough to move in 12 steps (the recipe's 0.9999 would stay at the init)
# seed 1: the demo images differ from the benchmarks' synthetic NWPU (seed 0) that the probes use
train = dict(epochs=None, steps=12, log_interval=2, save_interval=6, seed=1, device='CPU', mode='graph')
