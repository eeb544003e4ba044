"""gmnerf-auto, the gm-nerf methods' default dataparser: ``--data`` alone picks the dataset's parser."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.parsers.auto import AutoDataParserConfig
from gmnerf_ns.data.parsers.easymocap import EasyMocapDataParserConfig
from gmnerf_ns.data.parsers.genebody import GeneBodyDataParser, GeneBodyDataParserConfig
from gmnerf_ns.data.parsers.multigarment import MultiGarmentDataParserConfig
from gmnerf_ns.data.parsers.synthetic import SyntheticDataParser, SyntheticDataParserConfig
from gmnerf_ns.data.parsers.thuman2 import THuman2DataParserConfig
from gmnerf_ns.data.parsers.zju_mocap import ZJUMocapDataParser, ZJUMocapDataParserConfig
from tests.fixtures.datasets_captures import make_genebody
from tests.fixtures.datasets_zju import make_synthetic_dataset, make_zju_subject

RES = 16


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data root holding every layout: zju_mocap/, genebody/, synthetic/, thuman2_render/, multigarment_render/."""
    root = tmp_path_factory.mktemp("data")
    make_zju_subject(root / "zju_mocap", 313, legacy=True, lists=True, num_frames=2, size=32, num_vertices=300)
    make_zju_subject(root / "zju_mocap", 377, num_frames=2, size=32, num_vertices=300)
    make_genebody(root / "genebody", {"amanda": [1, 13, 25, 37, 40], "dannier": [1, 13, 25, 37]},
                  split={"train": ["dannier"], "test": ["amanda"]})
    for name in ("synthetic", "thuman2_render", "multigarment_render"):
        make_synthetic_dataset(root / name, subjects=(0, 1), test=(1,), num_frames=1, num_vertices=300)
    for name, source in (("thuman2_render", "THuman2.0"), ("multigarment_render", "Multi-garment")):
        for subject in ("subject_000", "subject_001"):  # as gmnerf-render-scans writes it
            (root / name / subject / "subject.json").write_text(json.dumps({"dataset": source}))
    return root


@pytest.fixture
def data_root(data, monkeypatch):
    monkeypatch.setenv("GMNERF_DATA", str(data))
    monkeypatch.setenv("XDG_CACHE_HOME", str(data / "cache"))  # GeneBody's crop cache
    return data


def outputs(parser, split):
    out = parser.get_dataparser_outputs(split)
    return len(out.cameras), [p.relative_to(parser.resolve_root()) for p in out.image_filenames]


def test_zju_short_name_uses_the_zju_parser(data_root):
    parser = AutoDataParserConfig(data=Path("zju/313"), resolution=RES).setup()
    assert type(parser) is ZJUMocapDataParser and parser.protocol.name == "zju-nhp"  # the dataset's default protocol
    assert parser.resolve_root() == data_root / "zju_mocap" / "CoreView_313"
    explicit = ZJUMocapDataParserConfig(data=Path("zju/313"), resolution=RES).setup()
    for split in ("train", "test"):
        count, names = outputs(parser, split)
        assert count > 0 and (count, names) == outputs(explicit, split)


@pytest.mark.parametrize("rel, expected", [
    ("zju_mocap", ZJUMocapDataParserConfig),
    ("zju_mocap/CoreView_377", ZJUMocapDataParserConfig),
    ("zju_mocap/CoreView_313", ZJUMocapDataParserConfig),  # legacy "Camera (N)" folders
    ("genebody", GeneBodyDataParserConfig),  # genebody_split.npy
    ("genebody/amanda", GeneBodyDataParserConfig),
    ("synthetic", SyntheticDataParserConfig),  # split.json
    ("synthetic/subject_001", SyntheticDataParserConfig),  # subject.json
    ("thuman2_render", THuman2DataParserConfig),
    ("multigarment_render/subject_000", MultiGarmentDataParserConfig),
])
def test_direct_paths_are_detected_by_layout(data, monkeypatch, rel, expected):
    monkeypatch.setenv("GMNERF_DATA", str(data / "nowhere"))  # a real path, not a short name
    auto = AutoDataParserConfig(data=data / rel, protocol="synthetic", train_subjects=("a",), resolution=RES,
                                num_input_views=2, max_eval_frames_per_subject=1)
    config, dataset, why = auto.detect()
    assert type(config) is expected and dataset.config is expected and why
    assert config.data == data / rel and config.protocol == "synthetic" and config.train_subjects == ("a",)
    assert (config.resolution, config.num_input_views, config.max_eval_frames_per_subject) == (RES, 2, 1)
    assert type(AutoDataParserConfig(data=data / rel).detect()[0]) is expected


def test_folder_under_data_root_and_short_names(data_root):
    config, _, _ = AutoDataParserConfig(data=Path("zju_mocap/CoreView_377")).detect()  # not a short name: layout
    assert type(config) is ZJUMocapDataParserConfig and config.protocol == "zju-nhp"
    config, _, _ = AutoDataParserConfig(data=Path("genebody/amanda")).detect()
    assert type(config) is GeneBodyDataParserConfig and config.protocol == "genebody-test10"
    assert type(AutoDataParserConfig(data=Path("thuman2_render")).detect()[0]) is THuman2DataParserConfig
    parser = AutoDataParserConfig(data=Path("genebody/amanda"), resolution=RES).setup()
    assert type(parser) is GeneBodyDataParser and len(parser.get_dataparser_outputs("test").cameras) > 0


def test_builtin_synthetic_default(data, tmp_path, monkeypatch):
    from gmnerf_ns.training.method_configs import gm_nerf, gm_nerf_finetune, gm_nerf_small

    for method in (gm_nerf, gm_nerf_small, gm_nerf_finetune):
        default = method.config.pipeline.datamanager.dataparser
        assert type(default) is AutoDataParserConfig and default.data == SyntheticDataParserConfig().data
    assert gm_nerf.config.pipeline.datamanager.dataparser.resolution == 512
    monkeypatch.delenv("GMNERF_DATA", raising=False)
    (tmp_path / "data").symlink_to(data, target_is_directory=True)
    monkeypatch.chdir(tmp_path)  # ./data/synthetic, where gmnerf-synth writes by default
    auto = AutoDataParserConfig(num_input_views=3, max_eval_frames_per_subject=1)
    parser = auto.setup()
    assert type(parser) is SyntheticDataParser and parser.protocol.name == "synthetic"
    explicit = SyntheticDataParserConfig(num_input_views=3, max_eval_frames_per_subject=1).setup()
    assert outputs(parser, "train") == outputs(explicit, "train")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")  # nothing generated yet: the synthetic parser's own hint
    with pytest.raises(HumanDataError, match="gmnerf-synth"):
        AutoDataParserConfig().setup().resolve_root()


def test_unknown_folder_and_path_say_what_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("GMNERF_DATA", str(tmp_path))
    (tmp_path / "photos" / "a").mkdir(parents=True)
    with pytest.raises(HumanDataError) as err:
        AutoDataParserConfig(data=tmp_path / "photos").setup()
    message = str(err.value)
    for text in ("cannot tell which dataset", "annots.npy", "Camera_B<n>", "image/, mask/, smpl/", "split.json",
                 "ns-train gm-nerf zju-mocap --data", "ns-train gm-nerf genebody --data"):
        assert text in message
    assert "\n" not in message  # one line
    with pytest.raises(HumanDataError, match=r"no such folder .*zju/<id>.*ns-train gm-nerf zju-mocap --data"):
        AutoDataParserConfig(data=Path("nothing/here")).setup()


def test_a_parser_pointed_at_another_dataset_says_which(data, tmp_path):
    amanda, zju = data / "genebody" / "amanda", data / "zju_mocap" / "CoreView_377"
    with pytest.raises(HumanDataError) as err:
        ZJUMocapDataParserConfig(data=amanda, resolution=RES).setup().collect("train")
    assert str(err.value).startswith(f"{amanda / 'annots.npy'}: 'cams' has no 'K' entry (found: 00, 01, ")
    assert str(err.value).endswith(f"; {amanda} looks like GeneBody (amanda/ has annots.npy, image/, mask/, smpl/): use "
                                   "ns-train gm-nerf genebody --data ..., or leave the dataparser out to detect it")
    root = data / "genebody"  # the whole GeneBody root: the ZJU protocol's subjects are not there
    with pytest.raises(HumanDataError) as err:
        ZJUMocapDataParserConfig(data=root, resolution=RES).setup().collect("train")
    assert str(err.value).startswith(f"{root}: subject ")
    assert "\n" not in str(err.value) and f"; {root} looks like GeneBody (" in str(err.value)
    with pytest.raises(HumanDataError) as err:
        GeneBodyDataParserConfig(data=zju, resolution=RES).setup().collect("train")
    assert str(err.value) == (f"{zju}: missing the image/ folder of a GeneBody subject; {zju} looks like ZJU-MoCap "
                              "(CoreView_377/ has annots.npy and camera folders): use ns-train gm-nerf zju-mocap --data "
                              "..., or leave the dataparser out to detect it")
    from gmnerf_ns.data.parsers.mvhumannet import MVHumanNetDataParserConfig

    with pytest.raises(HumanDataError, match=r"genebody: no MVHumanNet outfit \(<outfit id>/camera_extrinsics\.json "
                                             r"with camera_scale\.pkl\); .*genebody looks like GeneBody \(.*"
                                             r"genebody_split\.npy\): use ns-train gm-nerf genebody"):
        MVHumanNetDataParserConfig(data=data / "genebody", resolution=RES).setup().collect("train")
    with pytest.raises(HumanDataError, match=r"_mocap: no EasyMocap capture .*looks like ZJU-MoCap"):
        EasyMocapDataParserConfig(data=data / "zju_mocap", resolution=RES).setup().collect("train")


def test_layout_missing_a_file_is_named(tmp_path):
    """A GeneBody subject without smpl/ (an incomplete copy) is named as the missing folder, in one line."""
    make_genebody(tmp_path / "genebody", {"amanda": [1, 13, 25, 37]})
    amanda = tmp_path / "genebody" / "amanda"
    shutil.rmtree(amanda / "smpl")
    with pytest.raises(HumanDataError) as err:
        AutoDataParserConfig(data=amanda).setup()
    assert str(err.value) == (f"--data {amanda}: {amanda / 'smpl/'}: folder not found; amanda/ has annots.npy, image/ "
                              "like a GeneBody subject, which also needs smpl/ (an incomplete download or copy?)")
    (tmp_path / "capture").mkdir()
    (tmp_path / "capture" / "intri.yml").write_text("%YAML:1.0\n")
    with pytest.raises(HumanDataError, match=r"capture/extri\.yml: file not found; capture/ has intri\.yml like an "
                                             r"EasyMocap capture, which also needs extri\.yml"):
        AutoDataParserConfig(data=tmp_path / "capture").setup()


def test_ns_train_cli(data_root):
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    def cli(*args):
        return tyro.cli(AnnotatedBaseConfigUnion, args=list(args))

    config = cli("gm-nerf", "--data", "zju/313")
    dataparser = config.pipeline.datamanager.dataparser
    assert type(dataparser) is AutoDataParserConfig and config.data == Path("zju/313")
    assert dataparser.resolution == 512  # the method's default survives
    dataparser.data = config.data  # what ns-train and the datamanager do with the top-level --data
    assert type(dataparser.detect()[0]) is ZJUMocapDataParserConfig

    dataparser = cli("gm-nerf-small", "gmnerf-auto", "--data", "zju/313").pipeline.datamanager.dataparser
    assert type(dataparser) is AutoDataParserConfig and dataparser.data == Path("zju/313")
    dataparser = cli("gm-nerf-small", "zju-mocap", "--data", "zju/313").pipeline.datamanager.dataparser
    assert type(dataparser) is ZJUMocapDataParserConfig and dataparser.data == Path("zju/313")
    # scripts/demo.sh
    config = cli("gm-nerf-small", "--data", "data/synthetic", "gmnerf-synthetic", "--max-eval-frames-per-subject", "1")
    dataparser = config.pipeline.datamanager.dataparser
    assert type(dataparser) is SyntheticDataParserConfig and dataparser.max_eval_frames_per_subject == 1
    assert config.data == Path("data/synthetic")


def test_gmnerf_synth_interrupted_before_any_subject_says_to_finish_it(tmp_path, monkeypatch):
    """Killed right after writing manifest.json: no subject and no split.json yet."""
    from gmnerf_ns.synth.config import SynthConfig
    from gmnerf_ns.synth.generator import generate

    out = tmp_path / "synthetic"
    config = SynthConfig(out=out, num_subjects=1, num_test_subjects=1, num_cameras=2, num_frames=1, resolution=16,
                         progress=False, supersample=1)
    monkeypatch.setattr("gmnerf_ns.synth.generator.generate_subject", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        generate(config)
    assert (out / "manifest.json").is_file() and not (out / "split.json").exists()
    with pytest.raises(HumanDataError, match="incomplete gmnerf-synth dataset.*rerun the same gmnerf-synth command"):
        AutoDataParserConfig(data=out).setup()
