"""Synthetic AIR-MOT in the MOT-Challenge layout: true tracks, the CocoVideo converter, mmdet's
own MOT dataset reading it, and TrackEval (through mmdet's MOTChallengeMetric) scoring it."""
from __future__ import annotations

import configparser
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.datasets import mot
from benchmarks.datasets.mot import CLASSES, MARKER_NAME, PLANE, SHIP, generate_airmot, mot_to_cocovideo

SIZE, FRAMES, SEQS, SEED = 128, 10, 2, 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "airmot"
    return generate_airmot(root, num_seqs=SEQS, num_frames=FRAMES, size=SIZE, seed=SEED)


def gt_of(root: Path, seq: str) -> np.ndarray:
    return np.loadtxt(root / "train" / seq / "gt" / "gt.txt", delimiter=",", ndmin=2)


def test_layout_seqinfo_and_frames(dataset: Path) -> None:
    seqs = sorted(p.name for p in (dataset / "train").iterdir())
    assert seqs == ["SAT-01", "SAT-02"]
    for seq in seqs:
        ini = configparser.ConfigParser()
        ini.optionxform = str  # keep MOT's camelCase keys
        ini.read(dataset / "train" / seq / "seqinfo.ini")
        info = dict(ini["Sequence"])
        assert info == {"name": seq, "imDir": "img1", "frameRate": "10", "seqLength": str(FRAMES),
                        "imWidth": str(SIZE), "imHeight": str(SIZE), "imExt": ".jpg"}
        frames = sorted((dataset / "train" / seq / "img1").iterdir())
        assert [f.name for f in frames] == [f"{k:06d}.jpg" for k in range(1, FRAMES + 1)]
        with Image.open(frames[0]) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (SIZE, SIZE))
    assert not [p for p in dataset.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_gt_rows_follow_the_true_tracks(dataset: Path, tmp_path: Path) -> None:
    """gt.txt is written from the known tracks: each box is centred on the track's pose."""
    tracks = mot.write_sequence(tmp_path / "SAT-01", SEED, 0, FRAMES, SIZE)
    gt = gt_of(dataset, "SAT-01")
    assert (tmp_path / "SAT-01" / "gt" / "gt.txt").read_bytes() == (
        dataset / "train" / "SAT-01" / "gt" / "gt.txt").read_bytes()
    by_id = {t.track_id: t for t in tracks}
    assert {PLANE, SHIP} == {t.cls for t in tracks}
    for frame, tid, left, top, w, h, conf, cls, vis in gt:
        track = by_id[int(tid)]
        x, y, _ = track.pose(int(frame) - 1)
        assert abs(left + (w - 1) / 2 - x) <= 1.5 and abs(top + (h - 1) / 2 - y) <= 1.5
        assert (conf, cls, vis) == (1, track.cls, 1.0)
        assert 0 <= left and left + w <= SIZE and 0 <= top and top + h <= SIZE
    # Every track is in gt exactly for its frames [start, end).
    for track in tracks:
        frames = sorted(gt[gt[:, 1] == track.track_id, 0].astype(int))
        assert frames == list(range(track.start + 1, track.end + 1))


def test_objects_move_and_tracks_are_born_and_end(dataset: Path) -> None:
    spans, steps = [], []
    for seq in ("SAT-01", "SAT-02"):
        gt = gt_of(dataset, seq)
        for tid in np.unique(gt[:, 1]):
            rows = gt[gt[:, 1] == tid]
            spans.append((rows[0, 0], rows[-1, 0]))
            centres = rows[:, 2:4] + rows[:, 4:6] / 2
            steps += list(np.hypot(*np.diff(centres, axis=0).T))
    steps = np.array(steps)
    assert np.median(steps) > 0.4 and steps.max() < 4  # moving, slowly: satellite video at 10 fps
    assert any(start > 1 for start, _ in spans) and any(end < FRAMES for _, end in spans)
    assert any(start == 1 and end == FRAMES for start, end in spans)


def test_objects_stand_out_by_class_colour(dataset: Path) -> None:
    """Planes are near-white, ships orange, the scene neither: a colour rule finds the boxes."""
    seq = dataset / "train" / "SAT-02"
    gt = gt_of(dataset, "SAT-02")
    for frame in (1, FRAMES):
        image = np.asarray(Image.open(seq / "img1" / f"{frame:06d}.jpg"), np.int16)
        r, g, b = image[..., 0], image[..., 1], image[..., 2]
        colour = {PLANE: (r > 190) & (g > 190) & (b > 190), SHIP: (r > 190) & (b < 130) & (r - b > 100)}
        covered = np.zeros((SIZE, SIZE), bool)
        for _, _, left, top, w, h, _, cls, _ in gt[gt[:, 0] == frame]:
            box = (slice(int(top), int(top + h)), slice(int(left), int(left + w)))
            assert colour[int(cls)][box].mean() > 0.15  # an object of that class fills much of its box
            covered[max(0, int(top) - 2):int(top + h) + 2, max(0, int(left) - 2):int(left + w) + 2] = True
        stray = (colour[PLANE] | colour[SHIP]) & ~covered
        assert stray.mean() < 0.002  # nothing outside the boxes looks like an object


def test_deterministic_and_seed_dependent(tmp_path: Path, dataset: Path) -> None:
    again = generate_airmot(tmp_path / "again", num_seqs=SEQS, num_frames=FRAMES, size=SIZE, seed=SEED)
    other = generate_airmot(tmp_path / "other", num_seqs=SEQS, num_frames=FRAMES, size=SIZE, seed=SEED + 1)
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((dataset / f).read_bytes() == (again / f).read_bytes() for f in files)
    gt = Path("train", "SAT-01", "gt", "gt.txt")
    assert (dataset / gt).read_bytes() != (other / gt).read_bytes()


def test_marker_idempotence_and_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = generate_airmot(tmp_path / "a", num_seqs=1, num_frames=8, size=SIZE, seed=1)
    marker = json.loads((root / MARKER_NAME).read_text())
    assert (marker["num_seqs"], marker["num_frames"], marker["classes"]) == (1, 8, list(CLASSES))
    with monkeypatch.context() as patch:
        patch.setattr(mot, "write_sequence", lambda *a: pytest.fail("a complete dataset was regenerated"))
        assert generate_airmot(root, num_seqs=1, num_frames=8, size=SIZE, seed=1) == root
    (root / "train" / "SAT-01" / "img1" / "000003.jpg").unlink()  # incomplete: rebuilt
    generate_airmot(root, num_seqs=2, num_frames=8, size=SIZE, seed=1)  # other parameters: replaced
    assert sorted(p.name for p in (root / "train").iterdir()) == ["SAT-01", "SAT-02"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no staging or old copies left
    real = tmp_path / "real"
    (real / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not written by this generator"):
        generate_airmot(real, num_seqs=1, num_frames=8, size=SIZE)
    for bad in (dict(num_seqs=0), dict(num_frames=4), dict(size=32), dict(seed=-1)):
        with pytest.raises(ValueError):
            generate_airmot(tmp_path / "bad", **bad)


def test_half_split_conversion(dataset: Path) -> None:
    first = mot_to_cocovideo(dataset, "train", "first_half")
    second = mot_to_cocovideo(dataset, "train", "second_half")
    whole = mot_to_cocovideo(dataset, "train", "all")
    assert first["categories"] == [{"id": 1, "name": "plane"}, {"id": 2, "name": "ship"}]
    assert [v["name"] for v in second["videos"]] == ["SAT-01", "SAT-02"]
    assert len(first["images"]) == len(second["images"]) == SEQS * FRAMES // 2
    numbers = [im["mot_frame_id"] for im in second["images"] if im["video_id"] == 1]
    assert numbers == list(range(FRAMES // 2 + 1, FRAMES + 1))
    assert [im["frame_id"] for im in second["images"] if im["video_id"] == 1] == list(range(FRAMES // 2))
    assert second["images"][0]["file_name"] == f"SAT-01/img1/{FRAMES // 2 + 1:06d}.jpg"
    rows = sum(len(gt_of(dataset, s)) for s in ("SAT-01", "SAT-02"))
    assert len(first["annotations"]) + len(second["annotations"]) == len(whole["annotations"]) == rows
    # One instance id per (sequence, MOT id), stable across frames.
    pairs = {(second["images"][a["image_id"] - 1]["video_id"], a["instance_id"]) for a in second["annotations"]}
    assert len({i for _, i in pairs}) == len(pairs)
    ann = whole["annotations"][0]
    assert {"bbox", "area", "category_id", "instance_id", "mot_conf", "visibility", "iscrowd"} <= set(ann)


def test_converter_handles_mot15_rows_ignore_rows_and_other_classes(tmp_path: Path) -> None:
    seq = tmp_path / "train" / "S"
    (seq / "gt").mkdir(parents=True)
    mot._write_seqinfo(seq / "seqinfo.ini", "S", 2, 64)
    (seq / "gt" / "gt.txt").write_text("1,7,1,2,10,5,1,2,1.0\n1,8,5,5,4,4,0,1,0.5\n2,7,2,2,10,5,-1,-1,-1\n"
                                       "2,9,3,3,3,3,1,5,1\n")
    data = mot_to_cocovideo(tmp_path, "train", "all")
    anns = data["annotations"]
    assert [(a["category_id"], a["instance_id"], a["iscrowd"]) for a in anns] == [(2, 1, 0), (1, 2, 1), (1, 1, 0)]
    assert anns[0]["bbox"] == [1.0, 2.0, 10.0, 5.0] and anns[0]["area"] == 50.0
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no sequences"):
        mot_to_cocovideo(tmp_path, "empty", "all")
    with pytest.raises(FileNotFoundError, match="MOT layout"):
        mot_to_cocovideo(tmp_path, "test", "all")
    with pytest.raises(ValueError, match="frames"):
        mot_to_cocovideo(tmp_path, "train", "middle")


def test_cli_generates_and_converts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "c"
    assert mot.main(["--root", str(root), "--num-seqs", "1", "--num-frames", "8", "--size", str(SIZE)]) == 0
    assert mot.main(["--root", str(root), "--to-coco", str(tmp_path / "v.json"), "--frames", "second_half"]) == 0
    assert len(json.loads((tmp_path / "v.json").read_text())["images"]) == 4
    with pytest.raises(SystemExit):
        mot.main(["--help"])
    assert "gt.txt" in capsys.readouterr().out


def _mmdet_val_dataset(ann_file: Path, root: Path):
    import benchmarks.models.registry  # noqa: F401  compat shims and registration, as configs do
    from mmdet.datasets import MOTChallengeDataset
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    return MOTChallengeDataset(ann_file=str(ann_file), data_root=str(root), data_prefix=dict(img_path="train"),
                               metainfo=dict(classes=CLASSES), test_mode=True, pipeline=[])


@pytest.fixture(scope="module")
def val_videos(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    ann = mot.write_json_atomic(mot_to_cocovideo(dataset, "train", "second_half"),
                                tmp_path_factory.mktemp("ann") / "val.json")
    ds = _mmdet_val_dataset(ann, dataset)
    assert ds.metainfo["classes"] == CLASSES and len(ds) == SEQS
    return [ds.get_data_info(i) for i in range(len(ds))]


def test_mmdet_reads_the_converted_videos(val_videos: list[dict], dataset: Path) -> None:
    first = val_videos[0]["images"][0]
    assert first["img_path"].endswith(f"train/SAT-01/img1/{FRAMES // 2 + 1:06d}.jpg")
    assert Path(first["img_path"]).is_file() and first["frame_id"] == 0
    gt = gt_of(dataset, "SAT-01")
    rows = gt[gt[:, 0] == FRAMES // 2 + 1]
    assert len(first["instances"]) == len(rows)
    inst = first["instances"][0]
    left, top, w, h = rows[0, 2:6]
    assert inst["bbox"] == [left, top, left + w, top + h] and inst["bbox_label"] == int(rows[0, 7]) - 1


def _score(videos: list[dict], predict) -> dict:
    """Feed predictions frame by frame to the configs' metric, as the val loop does."""
    import torch
    from mmdet.structures import DetDataSample, TrackDataSample
    from mmengine.structures import InstanceData

    from mmdet.evaluation.metrics import MOTChallengeMetric

    metric = MOTChallengeMetric(metric=["HOTA", "CLEAR", "Identity"], benchmark="MOT15")
    for video in videos:
        for image in video["images"]:
            sample = DetDataSample(metainfo=dict(img_path=image["img_path"], frame_id=image["frame_id"],
                                                 ori_video_length=video["video_length"],
                                                 instances=image["instances"]))
            boxes, ids = predict(image)
            sample.pred_track_instances = InstanceData(
                bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                instances_id=torch.tensor(ids, dtype=torch.long), scores=torch.ones(len(ids)))
            track = TrackDataSample()
            track.video_data_samples = [sample]
            metric.process({}, [track.to_dict()])
    return metric.evaluate(1)


def test_trackeval_scores_the_truth_perfectly_and_mistakes_less(val_videos: list[dict]) -> None:
    def truth(image):
        return [i["bbox"] for i in image["instances"]], [i["instance_id"] for i in image["instances"]]

    perfect = _score(val_videos, truth)
    for key in ("HOTA", "MOTA", "IDF1"):
        assert perfect[f"motchallenge-metric/{key}"] == pytest.approx(1.0)  # planes and ships both count
    assert perfect["motchallenge-metric/FN"] == 0 and perfect["motchallenge-metric/IDSW"] == 0

    def swapped(image):  # a new id for every object from the third frame on: identity errors only
        boxes, ids = truth(image)
        return boxes, [i + 1000 * (image["frame_id"] >= 2) for i in ids]

    worse = _score(val_videos, swapped)
    assert worse["motchallenge-metric/IDSW"] > 0
    assert worse["motchallenge-metric/IDF1"] < 0.9 and worse["motchallenge-metric/HOTA"] < 0.95
    assert worse["motchallenge-metric/MOTA"] < 1.0 and worse["motchallenge-metric/FN"] == 0
