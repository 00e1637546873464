# gMLP-Ti supervised on ImageNet (MindCV's recipe; Liu et al. 2021): 72.25 % top-1 after 350 epochs.
# From the reference: AdamW lr 1e-3 per 1024 images, weight decay 0.05, cosine, RandAugment m9,
# mixup 0.8 / cutmix 1.0, label smoothing 0.1. Assumed (DeiT's values): 5 warm-up epochs, min lr 1e-5.
_base_ = '_base_.py'
model = dict(family='gmlp', arch='gmlp_ti', drop_path_rate=0.0)   # Ti: no stochastic depth (paper)
data = dict(
    batch_size=128,     # per process; the lr scales with it (base_batch_size)
    num_workers=8,
    views=[dict(repeat=1, pipeline=[
        dict(type='random_resized_crop', size=224, scale=(0.08, 1.0), interpolation='bicubic'),
        dict(type='hflip', prob=0.5),
        dict(type='rand_augment', num_ops=2, magnitude=9, num_magnitude_bins=11),
        dict(type='normalize', mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    ])],
)
mix = dict(mixup=0.8, cutmix=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.1)
optim = dict(type='adamw', lr=1e-3, base_batch_size=1024, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8)
schedule = dict(type='cosine', warmup_epochs=5, min_lr=1e-5)
train = dict(epochs=350, log_interval=100, save_interval=5000, device='Ascend', mode='graph')
