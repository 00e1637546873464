"""Instance retrieval on INRIA Holidays: the synthetic dataset (layout, groups, determinism), the
Holidays mAP on hand-made rankings, and a real run of benchmarks/run.py --task retrieval."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import results
from benchmarks.datasets.holidays import (FIRST_GROUP, MARKER_NAME, file_names, generate_holidays, group_sizes,
                                          parse_name)
from benchmarks.run import main
from benchmarks.tasks.retrieval import holidays_index, prepare_holidays

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "benchmarks" / "retrieval" / "gem_resnet50_holidays.py"
SMALL = dict(groups=6, min_views=2, max_views=4, size=48, seed=0)


@pytest.fixture(scope="module")
def holidays(tmp_path_factory) -> Path:
    return generate_holidays(tmp_path_factory.mktemp("holidays") / "holidays", **SMALL)


# ---- the dataset -------------------------------------------------------------------------
def test_layout_groups_and_photos(holidays):
    names = sorted(p.name for p in (holidays / "jpg").iterdir())
    sizes = group_sizes(6, 2, 4, seed=0)
    assert names == file_names(6, 2, 4, seed=0) and len(names) == sum(sizes)
    assert names[0] == "100000.jpg" and all(parse_name(n)[0] in range(FIRST_GROUP, FIRST_GROUP + 6) for n in names)
    for g, count in enumerate(sizes):
        assert [parse_name(n)[1] for n in names if parse_name(n)[0] == FIRST_GROUP + g] == list(range(count))
    shapes = set()
    for name in names:
        with Image.open(holidays / "jpg" / name) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and max(image.size) == 48
            shapes.add(image.size)
    assert shapes <= {(48, 36), (36, 48)}  # landscape 4:3, or portrait
    assert json.loads((holidays / MARKER_NAME).read_text())["groups"] == 6


def test_generation_is_deterministic_reused_and_refuses_foreign_folders(holidays, tmp_path):
    again = generate_holidays(tmp_path / "again", **SMALL)
    for path in (holidays / "jpg").iterdir():
        assert (again / "jpg" / path.name).read_bytes() == path.read_bytes()
    stamp = (again / "jpg" / "100000.jpg").stat().st_mtime_ns
    generate_holidays(again, **SMALL)  # complete with the same parameters: reused
    assert (again / "jpg" / "100000.jpg").stat().st_mtime_ns == stamp
    other = generate_holidays(tmp_path / "other", **{**SMALL, "seed": 1})
    assert (other / "jpg" / "100000.jpg").read_bytes() != (holidays / "jpg" / "100000.jpg").read_bytes()
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "100000.jpg").write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="not written by this generator"):
        generate_holidays(tmp_path / "real", **SMALL)
    with pytest.raises(ValueError, match="min_views"):
        generate_holidays(tmp_path / "bad", groups=3, min_views=1)


def test_photos_of_a_group_find_each_other(holidays):
    """Learnable content: even a colour histogram retrieves a group's photos far above chance."""
    from benchmarks.models.knn import holidays_average_precision

    database, queries = holidays_index(holidays / "jpg")

    def histogram(name: str) -> torch.Tensor:
        pixels = np.asarray(Image.open(holidays / "jpg" / name)) // 64  # 4 levels per channel
        counts = np.bincount((pixels[..., 0] * 16 + pixels[..., 1] * 4 + pixels[..., 2]).ravel(), minlength=64)
        return torch.nn.functional.normalize(torch.tensor(counts, dtype=torch.float32).sqrt(), dim=0)

    features = torch.stack([histogram(n) for n in database])
    aps = [holidays_average_precision(features @ features[q["db_index"]], q["gt_label"], q["db_index"])[0]
           for q in queries]
    assert sum(aps) / len(aps) > 60  # random scores give about 18 here (78 for the histograms)


def test_index_of_a_folder_and_its_errors(holidays, tmp_path):
    database, queries = holidays_index(holidays / "jpg")
    assert database == file_names(6, 2, 4, seed=0)
    assert [q["img_path"] for q in queries] == [f"{FIRST_GROUP + g}00.jpg" for g in range(6)]
    for query in queries:
        group = parse_name(query["img_path"])[0]
        assert database[query["db_index"]] == query["img_path"]
        assert [database[i] for i in query["gt_label"]] == [
            n for n in database if parse_name(n)[0] == group and n != query["img_path"]]
    for files, message in ((["100001.jpg", "100002.jpg"], "no query"), (["100000.jpg"], "no other photo"),
                           (["100000.jpg", "100001.jpg", "IMG_1.jpg"], "not named like"), ([], "no Holidays")):
        folder = tmp_path / message.replace(" ", "_")
        folder.mkdir()
        for name in files:
            (folder / name).write_bytes(b"")
        with pytest.raises(ValueError, match=message):
            holidays_index(folder)


def test_prepare_writes_mmpretrain_annotations(holidays, tmp_path):
    """The annotation files parse with mmpretrain's BaseDataset, and its pipeline reads every photo."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import benchmarks.models.knn  # noqa: F401
    from mmpretrain.registry import DATASETS

    cfg = Config.fromfile(str(CONFIG))
    cfg.merge_from_dict({"img_size": 40})
    prepare_holidays(cfg, holidays, tmp_path)  # the root holding jpg/, as the real archives unpack
    assert cfg.model.prototype.dataset.data_root == cfg.train_dataloader.dataset.data_root == str(holidays / "jpg")
    assert cfg.holidays_record.num_queries == 6 and cfg.holidays_record.num_database == len(file_names(6, 2, 4, 0))
    with DefaultScope.overwrite_default_scope("mmpretrain"):
        queries = DATASETS.build(cfg.val_dataloader.dataset)
        database = DATASETS.build(cfg.model.prototype.dataset)
    assert len(queries) == 6 and len(database) == cfg.holidays_record.num_database
    sample = queries[1]["data_samples"]
    assert database.get_data_info(sample.db_index)["img_path"] == sample.img_path
    assert Path(sample.img_path).name == "100100.jpg" and sample.gt_label.tolist() == list(range(
        sample.db_index + 1, sample.db_index + len(sample.gt_label) + 1))
    assert max(database[0]["inputs"].shape[1:]) == 40  # img_size reached the database pipeline too


# ---- the metric ----------------------------------------------------------------------------
def _holidays_map_ap(ranked: list[int], query: int, relevant: set[int]) -> float:
    """score_ap_from_ranks_1 of eval_holidays/holidays_map.py, on a ranking that includes the query."""
    ranks, shift = [], 0
    for rank, image in enumerate(ranked):
        if image == query:
            shift = -1
        elif image in relevant:
            ranks.append(rank + shift)
    ap, step = 0.0, 1.0 / len(relevant)
    for ntp, rank in enumerate(ranks):
        precision_0 = 1.0 if rank == 0 else ntp / rank
        ap += (precision_0 + (ntp + 1) / (rank + 1)) * step / 2
    return 100 * ap


def _scores(ranking: list[int], size: int) -> torch.Tensor:
    """Scores that put the database images in ``ranking`` order."""
    scores = torch.zeros(size)
    scores[torch.tensor(ranking)] = torch.linspace(1.0, 0.1, len(ranking))
    return scores


def test_holidays_map_on_a_hand_made_ranking():
    """Groups A = {0 query, 1, 2}, B = {3 query, 4}, C = {5 query, 6}; every query ranks itself first."""
    from mmengine.evaluator import Evaluator
    from mmpretrain.evaluation import RetrievalAveragePrecision
    from mmpretrain.structures import DataSample

    from benchmarks.models.knn import HolidaysAveragePrecision

    cases = [  # (query, relevant, ranking of the whole database)
        (0, [1, 2], [0, 1, 3, 2, 4, 5, 6]),  # AP = (1 + (1/2 + 2/3) / 2) / 2 = 79.17
        (3, [4], [3, 4, 0, 1, 2, 5, 6]),  # AP = 100
        (5, [6], [5, 0, 1, 2, 6, 3, 4]),  # positive at rank 3 after the query: (0/3 + 1/4) / 2 = 12.5
    ]
    samples = [DataSample(metainfo={"db_index": q}).set_gt_label(rel).set_pred_score(_scores(ranking, 7))
               for q, rel, ranking in cases]
    evaluator = Evaluator(HolidaysAveragePrecision(topk=(1, 5)))
    evaluator.process(samples)
    metrics = evaluator.evaluate(len(samples))
    assert metrics["retrieval/mAP"] == pytest.approx((100 * (1 + 7 / 12) / 2 + 100 + 12.5) / 3)  # 63.89
    assert metrics["retrieval/Recall@1"] == pytest.approx(200 / 3)  # C's first hit is at rank 4
    assert metrics["retrieval/Recall@5"] == pytest.approx(100.0)
    for (q, rel, ranking), ap in zip(cases, (100 * (1 + 7 / 12) / 2, 100.0, 12.5)):
        assert _holidays_map_ap(ranking, q, set(rel)) == pytest.approx(ap)
    # mmpretrain's metric alone keeps the query in its own ranking, where it counts as a miss.
    plain = RetrievalAveragePrecision.calculate(_scores(cases[0][2], 7)[None], torch.tensor([[0, 1, 1, 0, 0, 0, 0]]),
                                                topk=7, mode="integrate")
    assert plain == pytest.approx(100 * ((0 / 1 + 1 / 2) / 2 + (1 / 3 + 2 / 4) / 2) / 2)  # 33.33, not 79.17


def test_holidays_map_matches_holidays_map_py_on_random_scores():
    from benchmarks.models.knn import holidays_average_precision

    generator = torch.Generator().manual_seed(0)
    for trial in range(20):
        scores = torch.rand(30, generator=generator)
        query = trial % 30
        relevant = sorted({(query + 1 + int(i)) % 30 for i in torch.randint(0, 29, (4,), generator=generator)})
        ranking = scores.argsort(descending=True).tolist()
        ap, _ = holidays_average_precision(scores, relevant, query)
        assert ap == pytest.approx(_holidays_map_ap(ranking, query, set(relevant)))


# ---- through the runner --------------------------------------------------------------------
def test_retrieval_run_writes_row_and_coverage(holidays, tmp_path):
    """Random weights (--checkpoint none), a ResNet-18: the machinery, not the score."""
    args = ["--task", "retrieval", "--checkpoint", "none", "--work-dir", str(tmp_path / "wd"),
            "--data-root", str(holidays), "--results", str(tmp_path / "r.csv"), "--cfg-options",
            "model.image_encoder.backbone.depth=18", "backbone_name=resnet18-gem", "img_size=48",
            "val_dataloader.num_workers=0", "model.prototype.num_workers=0"]
    assert main(args) == 0
    (row,) = results.read_rows(tmp_path / "r.csv")
    assert (row["task"], row["dataset"], row["split"], row["protocol"], row["backbone"]) == (
        "retrieval", "holidays", "test", "frozen", "resnet18-gem-random-init")
    assert row["primary_metric"] == "retrieval/mAP" and math.isfinite(float(row["primary_value"]))
    metrics = json.loads(row["metrics_json"])
    assert set(metrics) == {"retrieval/mAP", "retrieval/Recall@1", "retrieval/Recall@5"}
    assert 0 < metrics["retrieval/mAP"] <= 100
    cov = json.loads((tmp_path / "wd" / "coverage.json").read_text())
    assert cov["unexplained"] == [] and cov["summary"]["unexplained"] == 0
    assert set(cov["new"]) == {k for k in cov["new"] if k.startswith("image_encoder.backbone.")} | {
        "image_encoder.neck.p"}  # the random backbone, and GeM's p
    assert cov["summary"]["backbone_new"] > 0 and "downstream head" in cov["new"]["image_encoder.neck.p"]
    assert not list((tmp_path / "wd").glob("*.pth"))  # nothing was trained


def test_iters_is_refused_in_one_line(holidays, tmp_path, capsys):
    """Nothing trains here (a zero-epoch loop): --iters must not start training a retriever without a loss."""
    args = ["--task", "retrieval", "--checkpoint", "none", "--work-dir", str(tmp_path / "wd"),
            "--data-root", str(holidays), "--results", str(tmp_path / "r.csv"), "--iters", "5"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("run: error: --iters") and "\n" not in err


def test_a_folder_without_holidays_names_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "IMG_0001.jpg").write_bytes(b"")
    args = ["--task", "retrieval", "--checkpoint", "none", "--work-dir", str(tmp_path / "wd"),
            "--data-root", str(tmp_path / "photos"), "--results", str(tmp_path / "r.csv")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("run: error:") and "GGGGVV.jpg" in err and "\n" not in err
    assert not (tmp_path / "r.csv").exists()
