# SimMIM pretraining defaults shared by every RingMoE size (python pretrain/train.py --help).
model = dict(
    arch="tiny",               # a name from pretrain/models/arch.py: tiny, base, giant
    dropout=0.0,               # dropout inside the expert and shared FFNs
    sar_l1_power_target=False, # True: reconstruct the SAR-L1 total power as a ninth channel
)
data = dict(
    root=None,          # <root>/<modality>/*.png|tif; None generates demo data in the work dir
    type='folder',      # or 'mindrecord': <root>/<modality>/manifest.json + shards (pretrain/tools/make_dataset.py)
    batch_size=2,       # images per modality per step (the joint MoE path needs equal batches)
    demo_tiles=16,
    demo_tile_size=256,
)
optim = dict(lr=1e-3, min_lr=1e-5, warmup_steps=5, weight_decay=0.05, betas=(0.9, 0.999))
train = dict(
    steps=30,
    log_interval=5,
    save_interval=15,
    routing_interval=15,  # per-block expert load and drop rate (an extra eager forward); 0: never
    seed=0,
    device="CPU",       # CPU, GPU or Ascend (or --device)
    mode="graph",       # graph: compiled once (~30 s for tiny), ~4x faster steps; pynative: eager
)
checkpoint = dict(
    keep_last=3,        # keep the newest N checkpoints (the last_checkpoint pointer's is never deleted); 0: all
)
