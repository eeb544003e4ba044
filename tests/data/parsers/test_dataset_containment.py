"""Datasets may only make the parsers read files inside their own folder (``DatasetFolder`` in ``_files.py``)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.parsers._files import DatasetFolder, inside_root
from gmnerf_ns.data.parsers.easymocap import EasyMocapDataParserConfig
from gmnerf_ns.data.parsers.mvhumannet import MVHumanNetDataParserConfig
from tests.fixtures.datasets_captures import make_easymocap_capture, make_mvhumannet


@pytest.fixture
def tree(tmp_path):
    """``data/subject`` with a file, a symlink to it, a folder symlink to ``outside/`` and a secret outside."""
    subject = tmp_path / "data" / "subject"
    (subject / "images").mkdir(parents=True)
    (subject / "images" / "a.jpg").write_bytes(b"jpg")
    (subject / "images" / "alias.jpg").symlink_to(subject / "images" / "a.jpg")
    (tmp_path / "outside" / "dir").mkdir(parents=True)
    (tmp_path / "outside" / "secret.jpg").write_bytes(b"secret")
    (subject / "escape").symlink_to(tmp_path / "outside" / "dir", target_is_directory=True)
    return subject


def test_paths_inside_are_returned_unchanged(tree, tmp_path, monkeypatch):
    inside = DatasetFolder(tree)
    for path in (tree / "images" / "a.jpg", tree / "images" / "alias.jpg", tree / "images" / ".." / "images" / "a.jpg",
                 tree / "images" / "missing.jpg", tree.resolve() / "images" / "a.jpg"):
        assert inside.check(path) is path
    (tmp_path / "link").symlink_to(tree, target_is_directory=True)  # the folder itself may be a symlink
    assert inside_root(tmp_path / "link" / "images" / "alias.jpg", tmp_path / "link") == tmp_path / "link" / "images" \
        / "alias.jpg"
    monkeypatch.chdir(tmp_path / "data")  # or a relative path
    assert inside_root(Path("subject/images/a.jpg"), Path("subject")) == Path("subject/images/a.jpg")


@pytest.mark.parametrize("rel, reason", [
    ("images/../../../outside/secret.jpg", r"'\.\.' climbs out of it"),
    ("{outside}/secret.jpg", "an absolute path elsewhere"),
    ("escape/x.jpg", "a symlink leads to {outside}/dir/x.jpg"),
    ("escape/../secret.jpg", "a symlink leads to {outside}/secret.jpg"),  # '..' after a symlink: as the system opens it
])
def test_paths_leaving_the_folder_are_refused(tree, tmp_path, rel, reason):
    outside = tmp_path / "outside"
    path = tree / rel.format(outside=outside)
    with pytest.raises(HumanDataError) as info:
        DatasetFolder(tree).check(path, tree / "annots.npy", "image")
    message = str(info.value)
    assert message.startswith(f"{tree / 'annots.npy'}: image {path} is outside the dataset folder {tree} (")
    assert re.search(reason.format(outside=outside), message)
    assert message.endswith("a dataset may only reference files inside its folder: fix the path or copy the file in")
    with pytest.raises(HumanDataError, match=rf"^{path}: mask is outside the dataset folder"):
        inside_root(path, tree, what="mask")


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _symlink_out(folder: Path, outside: Path) -> Path:
    """Moves ``folder`` to ``outside`` and leaves a symlink to it in its place."""
    outside.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(folder), str(outside))
    folder.symlink_to(outside, target_is_directory=True)
    return outside


def test_easymocap_camera_folder_or_image_symlinked_out_is_refused(tmp_path, cache_home):
    capture = make_easymocap_capture(tmp_path / "data")
    config = dict(data=capture.folder, resolution=48)
    target = _symlink_out(capture.folder / "images" / "02", tmp_path / "outside" / "02")
    with pytest.raises(HumanDataError, match=rf"intri\.yml: camera '02' folder {capture.folder}/images/02 is outside "
                                             rf"the dataset folder {capture.folder} \(a symlink leads to {target}\)"):
        EasyMocapDataParserConfig(**config).setup().collect("train")
    (capture.folder / "images" / "02").unlink()
    shutil.move(str(target), str(capture.folder / "images" / "02"))
    image = capture.folder / "images" / "03" / "000001.jpg"
    image.rename(tmp_path / "outside" / "000001.jpg")
    image.symlink_to(tmp_path / "outside" / "000001.jpg")
    with pytest.raises(HumanDataError, match=rf"^{image}: image is outside the dataset folder"):
        EasyMocapDataParserConfig(**config).setup().collect("train")


def test_mvhumannet_camera_names_leaving_the_outfit_are_refused(tmp_path, cache_home):
    outfit = make_mvhumannet(tmp_path / "data")
    config = dict(data=outfit.folder, resolution=36)
    camera = outfit.folder / "images_lr" / outfit.names[1]
    target = _symlink_out(camera, tmp_path / "outside" / outfit.names[1])
    with pytest.raises(HumanDataError, match=rf"camera_extrinsics\.json: camera '{outfit.names[1]}' folder {camera} is "
                                             rf"outside the dataset folder .* \(a symlink leads to {target}\)"):
        MVHumanNetDataParserConfig(**config).setup().collect("train")
    camera.unlink()
    shutil.move(str(target), str(camera))
    path = outfit.folder / "camera_extrinsics.json"
    extrinsics = json.loads(path.read_text())
    extrinsics["1_/.png"] = next(iter(extrinsics.values()))  # camera name "/": the file system's root
    path.write_text(json.dumps(extrinsics))
    with pytest.raises(HumanDataError, match=r"camera_extrinsics\.json: camera '/' folder / is outside the dataset "
                                             r"folder .* \(an absolute path elsewhere\)"):
        MVHumanNetDataParserConfig(**config).setup().collect("train")
