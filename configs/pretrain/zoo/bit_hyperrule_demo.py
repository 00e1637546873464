# BiT-HyperRule at demo scale: the tiny BiT on the synthetic NWPU-RESISC45 (360 images: the
# small-data regime, so no mixup), the rule's schedule shape scaled to 10 steps on a CPU. The rule
# would resize these 64 px images to 160 and crop 128 (the 'hyperrule' sizes of bit_hyperrule.py);
# the demo takes 56 -> 48 to stay fast. A smoke run, not a result.
_base_ = 'bit_hyperrule.py'
model = dict(arch='bit_tiny')
data = dict(
    root=None,
    batch_size=16,
    num_workers=2,
    views=[dict(repeat=1, pipeline=[
        dict(type='resize', size=56, interpolation='bilinear'),
        dict(type='random_crop', size=48),
        dict(type='hflip', prob=0.5),
        dict(type='normalize', mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    ])],
)
# seed 1: the demo images differ from the benchmarks' synthetic NWPU (seed 0) that the probes use
train = dict(steps=10, log_interval=2, save_interval=5, seed=1, device='CPU', mode='graph')
