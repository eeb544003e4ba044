"""Every option of gm-nerf's own configs has a docstring, so ``ns-train gm-nerf --help`` (tyro) explains it."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap

import pytest

from gmnerf_ns.cli.pretrained import PretrainedRun
from gmnerf_ns.data.datamanager import GMNeRFDataManagerConfig
from gmnerf_ns.model.encoder import ImageEncoderConfig
from gmnerf_ns.model.gmnerf_model import GMNeRFModelConfig
from gmnerf_ns.model.losses import PerceptualLossConfig
from gmnerf_ns.synth.config import SynthConfig
from gmnerf_ns.training.pipeline import GMNeRFPipelineConfig
from gmnerf_ns.training.trainer import GMNeRFTrainerConfig


def undocumented_fields(cls) -> list:
    """Annotated fields in ``cls``'s own body (not inherited) that are not followed by a string literal."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    missing = []
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
            if name.startswith("_"):
                continue
            following = body[i + 1] if i + 1 < len(body) else None
            documented = (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                          and isinstance(following.value.value, str) and following.value.value.strip())
            if not documented:
                missing.append(name)
    return missing


@pytest.mark.parametrize("cls", [GMNeRFModelConfig, GMNeRFDataManagerConfig, GMNeRFPipelineConfig,
                                 GMNeRFTrainerConfig, ImageEncoderConfig, PerceptualLossConfig, SynthConfig,
                                 PretrainedRun], ids=lambda c: c.__name__)
def test_every_option_has_help_text(cls):
    assert undocumented_fields(cls) == []


def test_the_check_sees_a_missing_docstring():
    class Example:
        documented: int = 1
        """Explained."""
        bare: int = 2

    assert undocumented_fields(Example) == ["bare"]


def own_documented_fields(cls) -> set:
    """Annotated fields in ``cls``'s own body that are followed by a string literal (tyro's help text)."""
    if not dataclasses.is_dataclass(cls) or not cls.__module__.startswith("gmnerf_ns."):
        return set()
    own = set(getattr(cls, "__annotations__", {}))
    return own - set(undocumented_fields(cls))


def test_every_dataparser_option_has_help_text_written_once():
    """tyro reads a field's help from the first class of the MRO that documents it, so a dataset config that only
    narrows a default (DNA-Rendering's gender) keeps the shared text; the body-model options are explained once."""
    from gmnerf_ns.data.parsers.auto import AutoDataParserConfig
    from gmnerf_ns.data.parsers.body_model_config import BodyModelParserConfig
    from gmnerf_ns.training import dataparser_configs

    configs = {type(spec.config) for spec in vars(dataparser_configs).values() if hasattr(spec, "config")}
    assert len(configs) >= 9
    where: dict = {}
    for cls in configs:
        for f in dataclasses.fields(cls):
            if f.name.startswith("_"):
                continue
            documented = [c for c in cls.__mro__ if f.name in own_documented_fields(c)]
            assert documented, f"{cls.__name__}.{f.name} has no help text"
            where.setdefault(f.name, set()).update(documented)
    assert where["gender"] == where["cache_dir"] == {BodyModelParserConfig}
    assert where["body_model_dir"] == {BodyModelParserConfig, AutoDataParserConfig}
