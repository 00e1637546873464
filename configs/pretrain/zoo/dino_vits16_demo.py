# DINO's recipe at demo scale: the tiny ViT (dino_vit_demo: 64 px, patch 16, 4 blocks of width 64)
# with a narrow head, on the synthetic NWPU-RESISC45 (360 images), 2 global 64 px + 4 local 32 px
# crops, 33 steps (3 epochs of 11) on a CPU. A smoke run of the same code path, not a result.
_base_ = 'dino_vits16.py'
model = dict(arch='dino_vit_demo', drop_path_rate=0.0)  # no stochastic depth: resume is exact
_mean, _std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_jitter = dict(type='color_jitter', brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, prob=0.8)


def _crop(size, scale, blur, solarize=0.0):
    """One DINO crop pipeline (as dino_vits16.py's)."""
    ops = [dict(type='random_resized_crop', size=size, scale=scale, interpolation='bicubic'),
           dict(type='hflip', prob=0.5), _jitter, dict(type='grayscale', prob=0.2),
           dict(type='gaussian_blur', prob=blur, sigma=(0.1, 2.0))]
    if solarize:
        ops.append(dict(type='solarize', prob=solarize, threshold=128))
    return ops + [dict(type='normalize', mean=_mean, std=_std)]


data = dict(
    root=None,
    demo=dict(dataset='nwpu_resisc45', per_class=8, size=64),
    batch_size=32,
    num_workers=2,
    views=[
        dict(repeat=1, pipeline=_crop(64, (0.4, 1.0), blur=1.0)),
        dict(repeat=1, pipeline=_crop(64, (0.4, 1.0), blur=0.1, solarize=0.2)),
        dict(repeat=4, pipeline=_crop(32, (0.05, 0.4), blur=0.5)),
    ],
)
dino = dict(head=dict(out_dim=256, hidden_dim=128, bottleneck_dim=32), warmup_teacher_temp_epochs=1)
optim = dict(lr=0.0005, base_batch_size=32)
schedule = dict(warmup_epochs=1, min_lr=1e-6)
# seed 1: the generated images (and the initial weights) differ from the benchmarks' demo data
# (seed 0), so the k-NN and linear smoke figures are measured on images pretraining never saw.
train = dict(epochs=3, log_interval=3, save_interval=11, seed=1, device='CPU', mode='graph')
