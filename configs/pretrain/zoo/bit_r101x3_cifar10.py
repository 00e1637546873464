# BiT-M-R101x3 fine-tuned on CIFAR-10 at 160 px (the MindSpore BigTransfer recipe): 99.3 % top-1.
# From the reference: RMSProp, EMA 0.9999, mixup 0.5, RandAugment, label smoothing 0.1, 160 px.
# Assumed (not given there): the lr, RMSProp's constants (TF-style), batch, epochs and warm-up.
# data.root: CIFAR-10's training images as <root>/<class>/<image>.png; pretrained.path: BiT-M
# weights as a MindSpore checkpoint with pretrain/models/bit.py's names (its classifier is new).
_base_ = '_base_.py'
model = dict(family='bit', arch='bit_m_r101x3', num_classes=10)
pretrained = dict(path=None, new_keys=r'^classifier\.')
data = dict(
    batch_size=64,
    num_workers=8,
    views=[dict(repeat=1, pipeline=[
        dict(type='resize', size=176, interpolation='bilinear'),
        dict(type='random_crop', size=160),
        dict(type='hflip', prob=0.5),
        dict(type='rand_augment', num_ops=2, magnitude=9, num_magnitude_bins=11),
        dict(type='normalize', mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),   # BiT's [-1, 1] inputs
    ])],
)
mix = dict(mixup=0.5, cutmix=0.0, prob=1.0, label_smoothing=0.1)
optim = dict(type='rmsprop', lr=1e-4, weight_decay=1e-5, decay=0.9, momentum=0.9, eps=1e-3)
schedule = dict(type='cosine', warmup_epochs=1, min_lr=0.0)
ema = dict(decay=0.9999)
train = dict(epochs=10, log_interval=50, save_interval=2000, device='Ascend', mode='graph')
