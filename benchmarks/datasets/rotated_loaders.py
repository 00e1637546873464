"""A DOTA reader for mmrotate 1.0.0rc1 that also takes the raw DOTA v1.0 labelTxt files.

mmrotate's own readers cover DIOR-R (``DIORDataset``) and HRSC2016 (``HRSCDataset``) as they
are; configs use those directly. Its ``DOTADataset`` reads only the split patches that its
``tools/data/dota/split`` writes: a raw DOTA v1.0/v1.5 ``labelTxt`` file starts with
``imagesource:...`` and ``gsd:...`` lines, which it fails on (``float('imagesource:..')``),
it lists files in ``glob`` order (differs between file systems, so the dataset order and the
shuffling differ between machines) and gives every image the fixed ``img_shape``.

``DOTATxtDataset`` (registered in mmrotate's DATASETS; import this module through the
config's ``custom_imports``) is ``DOTADataset`` with those three things changed: header lines
are skipped, files are sorted, and height/width come from the image file's header. Everything
else (classes, ``diff_thr``, ``ann_file=''`` for unlabelled test images, filtering) is
mmrotate's.
"""
from __future__ import annotations

from pathlib import Path

from mmrotate.datasets import DOTADataset
from mmrotate.registry import DATASETS
from PIL import Image

_HEADER_KEYS = ("imagesource:", "gsd:")


def parse_dota_txt(text: str) -> list[tuple[list[float], str, int]]:
    """(polygon of 8 floats, class name, difficult) per object line of a DOTA labelTxt file.

    Header lines ('imagesource:GoogleEarth', 'gsd:0.146343590398', also 'gsd:null') and
    blank lines are skipped; any other line without 8 coordinates, a class and a difficulty
    flag is an error, so a malformed file is not read as fewer objects.
    """
    objects = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].lower().startswith(_HEADER_KEYS):
            continue
        if len(fields) < 10:
            raise ValueError(f"line {number}: expected 'x1 y1 ... x4 y4 class difficult', got {line!r}")
        objects.append(([float(v) for v in fields[:8]], fields[8], int(fields[9])))
    return objects


@DATASETS.register_module()
class DOTATxtDataset(DOTADataset):
    """DOTA-style ``<split>/images/*.png`` + ``<split>/labelTxt/*.txt``, raw or split patches.

    Args as ``DOTADataset``: ``ann_file`` is the labelTxt folder (relative to data_root),
    ``data_prefix=dict(img_path=...)`` the images folder; ``diff_thr`` marks objects with a
    larger difficulty flag as ignored.
    """

    def load_data_list(self) -> list[dict]:
        if self.ann_file == "":
            return super().load_data_list()  # images without labels (DOTA's test split)
        cls_map = {c: i for i, c in enumerate(self.metainfo["classes"])}
        txt_files = sorted(Path(self.ann_file).glob("*.txt"))
        if not txt_files:
            raise ValueError(f"There is no txt file in {self.ann_file}")
        return [self._data_info(txt, cls_map) for txt in txt_files]

    def _data_info(self, txt_file: Path, cls_map: dict[str, int]) -> dict:
        img_id = txt_file.stem
        img_path = str(Path(self.data_prefix["img_path"]) / f"{img_id}.png")
        with Image.open(img_path) as image:  # reads the header only
            width, height = image.size
        instances = []
        for polygon, name, difficult in parse_dota_txt(txt_file.read_text()):
            if name not in cls_map:
                raise ValueError(f"{txt_file}: class {name!r} is not one of {list(cls_map)}")
            instances.append(dict(bbox=polygon, bbox_label=cls_map[name],
                                  ignore_flag=int(difficult > self.diff_thr)))
        return dict(img_id=img_id, file_name=f"{img_id}.png", img_path=img_path, height=height,
                    width=width, instances=instances)
