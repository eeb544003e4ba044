"""Layout detection (gmnerf_ns/data/parsers/_layouts.py, which asks each parser config's ``detect``) sits below the
parsers, which use it for their errors, and gmnerf-auto."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.parsers.multigarment import MultiGarmentDataParserConfig
from gmnerf_ns.data.parsers.synthetic import SyntheticDataParserConfig
from gmnerf_ns.data.parsers.thuman2 import THuman2DataParserConfig
from gmnerf_ns.data.parsers.zju_mocap import ZJUMocapDataParserConfig
from tests.fixtures.datasets_zju import make_synthetic_dataset, make_zju_subject
from tests.fixtures.import_graph import import_graph, module_files

PACKAGE = "gmnerf_ns.data.parsers"
SPLIT = {"protocol": "synthetic", "train_subjects": ("subject_000",), "test_subjects": ("subject_001",)}


def test_layouts_sit_below_the_parsers_and_auto_above():
    graph = import_graph(module_files())
    shared = {f"{PACKAGE}.{name}" for name in ("auto", "base", "scale")}  # gmnerf-auto, the base class, units
    parsers = [m for m in graph if m.startswith(f"{PACKAGE}.") and not m.rsplit(".", 1)[1].startswith("_")
               and m not in shared]
    assert len(parsers) >= 9
    below = [m for m in graph[f"{PACKAGE}._layouts"] if m.startswith(f"{PACKAGE}.")]
    assert below == [f"{PACKAGE}.base"]  # no parser, no helper: only the base class (the data root's name)
    assert [m for m in parsers if f"{PACKAGE}.auto" in graph[m]] == []
    assert f"{PACKAGE}._layouts" in graph[f"{PACKAGE}.auto"]
    for name in ("easymocap", "genebody", "mvhumannet", "zju_mocap"):  # their errors name other datasets
        assert f"{PACKAGE}._layouts" in graph[f"{PACKAGE}.{name}"]


def test_each_dataset_has_one_label_and_config():
    from gmnerf_ns.data.parsers import _layouts, auto

    assert [d.subcommand for d in auto.DATASETS] == list(_layouts.LABELS)
    assert [d.label for d in auto.DATASETS] == list(_layouts.LABELS.values())
    assert len({d.config for d in auto.DATASETS}) == len(auto.DATASETS)


def test_same_layout_is_the_parsers_that_read_each_others_folders():
    """A parser's ``same_layout`` names the datasets whose configs extend its config or that its config extends."""
    from gmnerf_ns.data.parsers.auto import DATASETS

    for own in DATASETS:
        related = {d.subcommand for d in DATASETS
                   if issubclass(own.config, d.config) or issubclass(d.config, own.config)}
        assert set(own.config.same_layout) == related, own.subcommand
    assert set(ZJUMocapDataParserConfig.same_layout) == {"zju-mocap", "gmnerf-synthetic", "thuman2", "multi-garment"}


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """Built-in datasets whose first subject's annots.npy lost its intrinsics: gmnerf-synth's and rendered scans."""
    root = tmp_path_factory.mktemp("renders")
    for name, source in (("synthetic", None), ("thuman2", "THuman2.0"), ("multigarment", "Multi-garment")):
        subjects = make_synthetic_dataset(root / name, subjects=(0, 1), test=(1,), num_frames=1, num_vertices=300)
        for sub in subjects.values():
            if source is not None:
                (sub.folder / "subject.json").write_text(json.dumps({"dataset": source}))
        annots = np.load(root / name / "subject_000" / "annots.npy", allow_pickle=True).item()
        del annots["cams"]["K"]
        np.save(root / name / "subject_000" / "annots.npy", annots)
    return root


@pytest.mark.parametrize("config, data", [(ZJUMocapDataParserConfig, "synthetic"),
                                          (ZJUMocapDataParserConfig, "multigarment"),
                                          (SyntheticDataParserConfig, "thuman2"),
                                          (THuman2DataParserConfig, "synthetic"),
                                          (MultiGarmentDataParserConfig, "multigarment")])
def test_a_parser_is_not_sent_to_a_dataset_of_its_own_layout(renders, config, data):
    with pytest.raises(HumanDataError) as err:
        config(data=renders / data, resolution=16, **SPLIT).setup().collect("train")
    assert str(err.value).startswith(f"{renders / data / 'subject_000' / 'annots.npy'}: 'cams' has no 'K' entry")
    assert "looks like" not in str(err.value)


def test_rendered_scans_of_the_other_source_are_named(renders):
    folder = renders / "multigarment" / "subject_000"
    with pytest.raises(HumanDataError) as err:
        THuman2DataParserConfig(data=renders / "multigarment", resolution=16, **SPLIT).setup().collect("train")
    assert str(err.value).endswith(
        f"; {folder} looks like Multi-garment renders (gmnerf-render-scans) (subject_000/ has camera folders and "
        "subject.json or body_model.npz; subject.json: dataset Multi-garment): use ns-train gm-nerf multi-garment "
        "--data ..., or leave the dataparser out to detect it")


def test_each_dataset_config_detects_its_layout_and_auto_asks_them_in_order(tmp_path):
    """The rules live on the parser configs (``detect``); ``_layouts.detect_folder`` asks them in DETECTION_ORDER, so
    a ZJU-layout subject that the built-in data also claims (subject.json) is the built-in data's."""
    from gmnerf_ns.data.parsers import _layouts
    from gmnerf_ns.data.parsers.base import DATASET_CONFIGS

    assert sorted(_layouts.DETECTION_ORDER) == sorted(_layouts.LABELS) == sorted(DATASET_CONFIGS)
    assert all(config.dataset == name for name, config in DATASET_CONFIGS.items())
    subject = make_zju_subject(tmp_path, 377, num_frames=1, size=16, num_vertices=60).folder
    assert ZJUMocapDataParserConfig.detect(subject) == "CoreView_377/ has annots.npy and camera folders"
    assert SyntheticDataParserConfig.detect(subject) is None
    assert _layouts.detect_folder(subject, subject) == ("zju-mocap", "CoreView_377/ has annots.npy and camera folders")
    (subject / "subject.json").write_text(json.dumps({"dataset": "THuman2.0"}))
    why = "CoreView_377/ has camera folders and subject.json or body_model.npz; subject.json: dataset THuman2.0"
    assert ZJUMocapDataParserConfig.detect(subject) is not None  # the same layout ...
    assert SyntheticDataParserConfig.detect(subject) is None and THuman2DataParserConfig.detect(subject) == why
    assert _layouts.detect_folder(subject, subject) == ("thuman2", why)  # ... but the built-in data is asked first
    assert _layouts.detect_folder(tmp_path, tmp_path) == ("thuman2", why)  # a root: its sub-folders as subjects
    assert ZJUMocapDataParserConfig.detect(tmp_path) is None  # detect looks at the folder itself
