"""Instance retrieval (mmpretrain): INRIA Holidays, mAP; Multigrain's retrieval claim.

The protocol evaluates off-the-shelf features: nothing is trained on Holidays. The model is
mmpretrain's ``ImageToImageRetriever`` around an ``ImageClassifier`` without a head (a ResNet
and the ``GeneralizedMeanPooling`` neck for Multigrain), whose prototype is the whole database;
each query is scored against it by cosine similarity. ``HolidaysAveragePrecision``
(``benchmarks/models/knn.py``) then removes the query from its own ranking and averages the
trapezoidal AP of ``eval_holidays/holidays_map.py`` over the queries (``retrieval/mAP``).
The configs (``configs/benchmarks/retrieval/``) run a zero-epoch train loop (the runner
always trains, then validates); the runner's validation is the evaluation.

Holidays ships no annotation file: groups live in the file names (``jpg/GGGGVV.jpg``, photo
``00`` the query of group ``GGGG``; see ``benchmarks/datasets/holidays.py``). ``prepare`` lists
the images and writes mmpretrain annotation files into the work dir: ``splits/database.json``
(every image, in sorted name order) and ``splits/query.json`` (the ``00`` photos, each with
``gt_label`` = the database indices of its group's other photos and ``db_index`` = its own),
read by mmpretrain's ``BaseDataset``. Their hashes go into the config before the runner hashes
it, so the image set is part of the run's identity.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from benchmarks.tasks.spec import TaskSpec

SPLIT_DIR = "splits"
IMAGE_DIR = "jpg"  # the folder the real archives unpack to (benchmarks/datasets/holidays.py)


def holidays_demo(data_dir: Path, cfg: Any = None) -> Path:
    """Synthetic INRIA Holidays at data_dir/holidays (30 groups, 3-5 photos each)."""
    from benchmarks.datasets.holidays import generate_holidays

    return generate_holidays(data_dir / "holidays")


def image_folder(data_root: Path) -> Path:
    """The folder holding the photos: data_root/jpg (the real layout), else data_root itself."""
    nested = data_root / IMAGE_DIR
    return nested if nested.is_dir() else data_root


def holidays_index(folder: Path) -> tuple[list[str], list[dict]]:
    """(database file names, queries) of a Holidays image folder.

    The database is every ``GGGGVV.jpg``, sorted; a query is ``{'img_path', 'gt_label',
    'db_index'}`` for each group's photo ``00``: its relevant images are the group's other photos
    (database indices), ``db_index`` the query's own. Raises ValueError for other JPEG names, a
    group without a query, or a query without relevant photos.
    """
    from benchmarks.datasets.holidays import QUERY_INDEX, parse_name

    jpegs = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg"))
    strange = [name for name in jpegs if parse_name(name) is None]
    if strange:
        raise ValueError(f"{folder} holds JPEGs not named like Holidays' GGGGVV.jpg: {strange[:5]}"
                         f"{' ...' if len(strange) > 5 else ''}")
    if not jpegs:
        raise ValueError(f"{folder} holds no Holidays images (jpg/GGGGVV.jpg)")
    groups: dict[int, dict[int, int]] = {}  # group -> photo index -> database index
    for db_index, name in enumerate(jpegs):
        group, photo = parse_name(name)
        groups.setdefault(group, {})[photo] = db_index
    queries = []
    for group, photos in sorted(groups.items()):
        if QUERY_INDEX not in photos:
            raise ValueError(f"group {group} has no query photo {group:04d}{QUERY_INDEX:02d}.jpg in {folder}")
        relevant = [i for photo, i in sorted(photos.items()) if photo != QUERY_INDEX]
        if not relevant:
            raise ValueError(f"group {group} in {folder} has a query and no other photo to retrieve")
        own = photos[QUERY_INDEX]
        queries.append({"img_path": jpegs[own], "gt_label": relevant, "db_index": own})
    return jpegs, queries


def _write_json(path: Path, data: dict) -> str:
    text = json.dumps(data, indent=1) + "\n"
    path.write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def apply_img_size(cfg, size: int) -> None:
    """Set the long side of every ResizeEdge in the loaders (so ``--cfg-options img_size=500``
    changes the database, the queries and the dumped pipelines at once)."""
    pipelines = [cfg.get(name) or [] for name in ("test_pipeline", "query_pipeline")]  # as dumped
    loaders = [cfg.get(name) or {} for name in ("train_dataloader", "val_dataloader", "test_dataloader")]
    loaders.append(cfg.model.get("prototype") or {})
    pipelines += [loader.get("dataset", {}).get("pipeline", []) for loader in loaders]
    for step in (step for pipeline in pipelines for step in pipeline):
        if step["type"] == "ResizeEdge":
            step["scale"] = size


def prepare_holidays(cfg, data_root: Path, work_dir: Path) -> None:
    """Write work_dir/splits/{database,query}.json and point the database and query loaders at them."""
    folder = image_folder(data_root)
    database, queries = holidays_index(folder)
    out = work_dir / SPLIT_DIR
    out.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": "INRIA Holidays", "image_folder": str(folder)}
    digests = {
        "database": _write_json(out / "database.json", {"metainfo": {**meta, "role": "database"},
                                                        "data_list": [{"img_path": n} for n in database]}),
        "query": _write_json(out / "query.json", {"metainfo": {**meta, "role": "query"}, "data_list": queries}),
    }
    database_loaders = [cfg.get("train_dataloader"), cfg.model.get("prototype")]
    query_loaders = [cfg.get("val_dataloader"), cfg.get("test_dataloader")]
    for loaders, split in ((database_loaders, "database"), (query_loaders, "query")):
        for loader in loaders:
            if loader and "dataset" in loader:
                loader.dataset.update(data_root=str(folder), data_prefix="",
                                      ann_file=str((out / f"{split}.json").resolve()))
    cfg.data_root = str(folder)
    # In the config, hence in the run's identity: another image set is another run.
    cfg.holidays_record = dict(num_database=len(database), num_queries=len(queries), sha256=digests)
    apply_img_size(cfg, int(cfg.img_size))


SPEC = TaskSpec(
    config="configs/benchmarks/retrieval/gem_resnet50_holidays.py",
    dataset="holidays", metric="retrieval/mAP", package="mmpretrain",
    demo_data=holidays_demo, prepare=prepare_holidays, backbone="image_encoder.backbone")
