"""An evaluation scores only what the model was not given: a protocol whose target views include one of its source
views is refused with one line, in every parser (they share ``HumanCollection.targets_for``) and so in ``ns-eval``;
the shipped presets have none (the generalization suite's rigs: tests/benchmarks/test_generalization_suite.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import evenly_spaced
from gmnerf_ns.data.parsers.synthetic import SyntheticDataParserConfig
from gmnerf_ns.data.protocol import available_protocols, load_protocol
from tests.fixtures.datasets_zju import make_synthetic_dataset, synthetic_datamanager


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, num_frames=1, num_vertices=300)
    return root


def protocol_file(folder: Path, **keys) -> Path:
    path = folder / "protocol.yaml"
    path.write_text(yaml.safe_dump({"name": "leaky", "num_input_views": 3, "resolution": 48, **keys}))
    return path


def test_a_target_that_is_a_source_view_is_refused_in_one_line(data, tmp_path):
    parser = SyntheticDataParserConfig(data=data, protocol=str(protocol_file(tmp_path))).setup()
    subject = parser.collect("test").subjects[0]
    sources = evenly_spaced(len(subject.camera_names), 3)
    novel = next(i for i in range(len(subject.camera_names)) if i not in sources)

    leaky = SyntheticDataParserConfig(data=data, protocol=str(protocol_file(tmp_path, target_views=[novel, sources[1]])))
    with pytest.raises(HumanDataError) as caught:
        leaky.setup().get_dataparser_outputs(split="test")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"protocol leaky: subject {subject.name}: target view(s) {sources[1]} are also source "
                              f"views (sources: {', '.join(map(str, sources))})")

    explicit = SyntheticDataParserConfig(data=data, protocol=str(protocol_file(
        tmp_path, input_views=[novel, sources[1], sources[2]], target_views=[sources[0], novel])))
    with pytest.raises(HumanDataError, match=f"target view\\(s\\) {novel} are also source views"):
        explicit.setup().get_dataparser_outputs(split="test")

    clean = SyntheticDataParserConfig(data=data, protocol=str(protocol_file(tmp_path, target_views=[novel])))
    outputs = clean.setup().get_dataparser_outputs(split="test")
    assert outputs.cameras.metadata["camera_index"][:, 0].tolist() == [novel]


def test_ns_eval_never_conditions_a_target_on_itself(data):
    datamanager = synthetic_datamanager(data)
    dataset = datamanager.eval_dataset
    meta = dataset.cameras.metadata
    assert len(dataset) > 0
    for index in range(len(dataset)):
        subject_index, frame_id = int(meta["subject_index"][index, 0]), int(meta["frame_id"][index, 0])
        sources = datamanager.source_views(subject_index, frame_id)
        assert int(meta["camera_index"][index, 0]) not in sources.camera_indices


def test_shipped_presets_have_no_source_view_among_their_targets():
    for name in available_protocols():
        protocol = load_protocol(name)
        for targets in [protocol.target_views, *protocol.target_views_per_subject.values()]:
            if targets is not None and protocol.input_views is not None:
                assert not set(targets) & set(protocol.input_views), name

