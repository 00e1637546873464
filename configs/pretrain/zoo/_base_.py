# Seed-zoo training defaults (pretrain/zoo/; python -m pretrain.zoo.train --help). A config with a
# `recipe` key is trained by pretrain/zoo's engine, also through pretrain/train.py.
recipe = 'supervised'   # the objective: 'supervised' (gMLP, BiT); 'multigrain' and 'dino' as they land
model = dict(
    family=None,        # gmlp, bit, multigrain, dino (pretrain/zoo/recipes.py FACTORIES)
    arch=None,          # a variant name of the family's ARCHS, or an architecture dict
    num_classes=None,   # None: the number of class folders of the data
)                       # any other key is passed to the family's factory (e.g. drop_path_rate)
pretrained = dict(      # fine-tuning: start from these MindSpore weights (the model's own names)
    path=None,
    new_keys=None,      # regex of parameters that may be missing or mis-shaped there (a new head)
)
data = dict(
    root=None,          # <root>/<class>/<image>, read by mindspore.dataset.ImageFolderDataset;
                        # None: generate the synthetic NWPU-RESISC45 of `demo` in the work dir
    demo=dict(dataset='nwpu_resisc45', per_class=8, size=64),
    batch_size=32,      # samples per step
    num_workers=2,      # image decoding and view workers
    python_multiprocessing=False,  # view workers as threads (False) or processes
    # View groups: each sample gives sum(repeat) views; each pipeline ends with normalize.
    # Ops (pretrain/zoo/transforms.py): random_resized_crop, resize, random_crop, center_crop,
    # hflip, rand_augment, color_jitter, grayscale, gaussian_blur, solarize, normalize.
    # 'hyperrule' as a size: BiT-HyperRule's resize (160 or 512) / crop (128 or 480) from the image size.
    views=[dict(repeat=1, pipeline=[
        dict(type='random_resized_crop', size=224, scale=(0.08, 1.0), interpolation='bicubic'),
        dict(type='hflip', prob=0.5),
        dict(type='normalize', mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    ])],
)
mix = dict(             # supervised batch ops (timm's Mixup, batch mode)
    mixup=0.0,          # Beta alpha; 0: off; 'hyperrule': 0.0 below 20k images, else 0.1
    cutmix=0.0,
    prob=1.0,
    switch_prob=0.5,    # both on: chance of cutmix instead of mixup
    label_smoothing=0.0,
)
optim = dict(
    type='adamw',       # adamw (nn.AdamWeightDecay) | sgd (nn.Momentum) | rmsprop (nn.RMSProp)
    lr=1e-3,            # peak learning rate ...
    base_batch_size=None,  # ... for this batch size (lr x batch_size / base_batch_size); None: as given
    weight_decay=0.05,
    no_decay_1d=True,   # no weight decay on biases and norm parameters
    betas=(0.9, 0.999), # adamw
    eps=1e-8,           # adamw; rmsprop's epsilon
    momentum=0.9,       # sgd, rmsprop
    nesterov=False,     # sgd
    decay=0.9,          # rmsprop's moving-average decay
)
schedule = dict(
    type='cosine',      # cosine (linear warm-up, cosine to min_lr) | bit_hyperrule (steps from the data size)
                        # | multistep (x gamma at each of milestones=(epochs, ...); Multigrain)
    warmup_epochs=0,
    warmup_steps=None,  # overrides warmup_epochs
    min_lr=0.0,
)
ema = dict(
    decay=0.0,          # EMA of every model weight (0: off); written as <family>-<name>-ema.ckpt
    warmup_updates=0,   # >0: decay x (1 - exp(-updates / warmup_updates)), mindcv's warm-up
)
train = dict(
    epochs=None,        # epochs = images // batch_size steps each ...
    steps=None,         # ... or an explicit step count (bit_hyperrule: the rule's length scaled to it)
    log_interval=10,
    save_interval=500,
    seed=0,
    device='CPU',       # CPU, GPU or Ascend (or --device)
    mode='graph',       # graph: compiled (ms.jit); pynative: eager
)
checkpoint = dict(keep_last=3)
