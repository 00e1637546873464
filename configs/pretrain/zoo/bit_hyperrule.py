# BiT-HyperRule fine-tuning (Kolesnikov et al. 2020): SGD momentum 0.9, lr 0.003, batch 512, no
# weight decay; the schedule length, its decay points and mixup follow the number of training
# images, the resolution follows their size (pretrain/zoo/schedules.py has the table).
_base_ = '_base_.py'
model = dict(family='bit', arch='bit_m_r101x3')
pretrained = dict(path=None, new_keys=r'^classifier\.')   # BiT-M weights; the head is new (zero-initialised)
data = dict(
    batch_size=512,
    num_workers=8,
    views=[dict(repeat=1, pipeline=[
        dict(type='resize', size='hyperrule', interpolation='bilinear'),   # 160, or 512 for images >= 96x96
        dict(type='random_crop', size='hyperrule'),                        # 128, or 480
        dict(type='hflip', prob=0.5),
        dict(type='normalize', mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    ])],
)
mix = dict(mixup='hyperrule', cutmix=0.0, prob=1.0, label_smoothing=0.0)
optim = dict(type='sgd', lr=0.003, momentum=0.9, nesterov=False, weight_decay=0.0)
schedule = dict(type='bit_hyperrule')
train = dict(epochs=None, steps=None, log_interval=50, save_interval=2000, device='Ascend', mode='graph')
