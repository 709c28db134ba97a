"""Pure ``nn.Module`` building blocks: no file or dataset I/O here."""

from .base import AutomaticSegmentationModel, PromptableSegmentationModel, SegmentationModel
from .config import ARCHITECTURES, ModelConfig
from .detail import DetailDecoder, DetailStem, StemEncoder, embedding_encoder
from .ecm_decoder import ECMDecoder
from .hrmedseg import HRMedSeg
from .hrmedseg_detail import HRMedSegDetail
from .hrmedseg_sam import HRMedSegSAM
from .hrmedseg_sam_detail import HRMedSegSAMDetail
from .lgvit import LGViT
from .prompt_encoder import PromptEncoder

__all__ = [
    "ARCHITECTURES",
    "AutomaticSegmentationModel",
    "DetailDecoder",
    "DetailStem",
    "ECMDecoder",
    "HRMedSeg",
    "HRMedSegDetail",
    "HRMedSegSAM",
    "HRMedSegSAMDetail",
    "LGViT",
    "ModelConfig",
    "PromptEncoder",
    "PromptableSegmentationModel",
    "SegmentationModel",
    "StemEncoder",
    "embedding_encoder",
]
