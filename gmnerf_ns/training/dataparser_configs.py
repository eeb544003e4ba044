"""nerfstudio dataparser registrations (entry points ``nerfstudio.dataparser_configs``), one per dataset."""

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from gmnerf_ns.data.parsers.auto import AutoDataParserConfig
from gmnerf_ns.data.parsers.dnarendering import DNARenderingDataParserConfig
from gmnerf_ns.data.parsers.easymocap import EasyMocapDataParserConfig
from gmnerf_ns.data.parsers.genebody import GeneBodyDataParserConfig
from gmnerf_ns.data.parsers.humman import HuMManDataParserConfig
from gmnerf_ns.data.parsers.multigarment import MultiGarmentDataParserConfig
from gmnerf_ns.data.parsers.mvhumannet import MVHumanNetDataParserConfig
from gmnerf_ns.data.parsers.synthetic import SyntheticDataParserConfig
from gmnerf_ns.data.parsers.thuman2 import THuman2DataParserConfig
from gmnerf_ns.data.parsers.zju_mocap import ZJUMocapDataParserConfig

auto_dataparser = DataParserSpecification(
    config=AutoDataParserConfig(),
    description="gm-nerf default: detects the dataset from --data (zju/313, genebody/<subject>, a dataset folder) "
    "and uses its dataparser.",
)
synthetic_dataparser = DataParserSpecification(
    config=SyntheticDataParserConfig(),
    description="gmnerf-ns built-in synthetic humans (gmnerf-synth), ZJU-MoCap layout with ground-truth meshes.",
)
zju_mocap_dataparser = DataParserSpecification(
    config=ZJUMocapDataParserConfig(),
    description="ZJU-MoCap (CoreView_<id>): --data zju/313 or a path; NHP generalizable protocol by default.",
)
genebody_dataparser = DataParserSpecification(
    config=GeneBodyDataParserConfig(),
    description="GeneBody (48 views, SMPL-X proxy); Test10 protocol, 4 source views [01,13,25,37].",
)
thuman2_dataparser = DataParserSpecification(
    config=THuman2DataParserConfig(),
    description="THuman2.0 scans rendered by gmnerf-render-scans (perspective ring), SMPL-X proxy.",
)
multigarment_dataparser = DataParserSpecification(
    config=MultiGarmentDataParserConfig(),
    description="Multi-garment (MGN) scans rendered by gmnerf-render-scans, SMPL proxy from registration.pkl.",
)
easymocap_dataparser = DataParserSpecification(
    config=EasyMocapDataParserConfig(),
    description="Your own capture in EasyMocap's layout (intri.yml/extri.yml, images/, mask/, output*/smpl or "
    "output*/vertices); --body-model-dir to pose SMPL parameters.",
)
humman_dataparser = DataParserSpecification(
    config=HuMManDataParserConfig(),
    description="HuMMan-Recon (10 color Kinects, sparse frames, SMPL parameters); --body-model-dir to pose them.",
)
mvhumannet_dataparser = DataParserSpecification(
    config=MVHumanNetDataParserConfig(),
    description="MVHumanNet outfits (half-resolution images, mm x rig-scale cameras, soft masks, SMPL-X meshes or "
    "EasyMocap JSON fits with --body-model-dir).",
)
dna_rendering_dataparser = DataParserSpecification(
    config=DNARenderingDataParserConfig(),
    description="DNA-Rendering .smc sequences (RT camera-to-world, 5 MP / 12 MP groups, masks and SMPL-X in the "
    "annotation file); --body-model-dir to pose SMPL-X.",
)
