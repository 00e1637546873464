# SimMIM pretraining defaults shared by every RingMoE size (python pretrain/train.py --help).
model = dict(
    arch="tiny",               # a name from pretrain/models/arch.py: tiny, base, giant
    dropout=0.0,               # dropout inside the expert and shared FFNs
    sar_l1_power_target=False, # True: reconstruct the SAR-L1 total power as a ninth channel
)
data = dict(
    root=None,          # <root>/<modality>/*.png|tif; None generates demo data in the work dir
    type='folder',      # or 'mindrecord': <root>/<modality>/manifest.json + shards (pretrain/tools/make_dataset.py)
    batch_size=2,       # images per modality per step and rank (the joint MoE path needs equal batches)
    demo_tiles=16,
    demo_tile_size=256,
    # The input pipeline (pretrain/data/pipeline.py): per modality a mindspore.dataset whose map
    # does random resized crop -> horizontal flip -> [0, 1] -> normalise (+ SAR-L1 power target)
    # and draws the SimMIM mask; the four are zipped into one step. Every sample is seeded by
    # (seed, step, modality, slot), so workers and --resume never change the batches.
    num_workers=2,      # map workers per modality (4 modalities: 4x this many); 0: in-process numpy, no mindspore.dataset
    python_multiprocessing=False, # workers as threads (numpy releases the GIL in the heavy parts; start and stop
                                  # in ms) or processes (True: scales past the GIL on many cores, ~1 s to start and
                                  # ~1 s per modality to stop); benchmarks/perf/pipeline_perf.py measures both
    crop_scale=(0.2, 0.5),        # random resized crop: area fraction of the tile (SimMIM/RingMoE recipe)
    crop_ratio=(3 / 4, 4 / 3),    # ... and aspect ratio (width/height) range; output arch.img_size
    flip_prob=0.5,      # horizontal flip
    prefetch=4,         # rows buffered between pipeline stages (after batching a row is one step)
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
parallel = dict(        # distributed training (pretrain/parallel.py; launch with pretrain/launch/)
    mode='stand_alone', # 'data_parallel' (CPU, GPU, Ascend) or 'semi_auto_parallel' (GPU, Ascend only)
    data_parallel=1,    # data_parallel x model_parallel = processes launched (one per device)
    model_parallel=1,   # semi-auto: FFN width and attention heads split over this many ranks
    expert_parallel=1,  # semi-auto: experts spread over data-parallel ranks; divides data_parallel and the experts
    pipeline_stages=1,  # only 1 (the model is not cut into stage cells)
    optimizer_shard=False,  # shard optimizer state (and, semi-auto, weights) over the ranks holding copies
    optimizer_shard_size=-1,  # ranks per optimizer-shard group; -1: all of them
    optimizer_shard_threshold_kb=64,  # smaller parameters stay whole (MindSpore's default)
    recompute=False,    # recompute each encoder block in the backward pass (memory for time)
    gradients_mean=True,
    strategy_file='strategy.json',  # in the work dir, beside rank_<r>/ checkpoints: converters/ms2torch.py --strategy
)
