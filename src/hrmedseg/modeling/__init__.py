"""Pure ``nn.Module`` building blocks: no file or dataset I/O here."""

from .ecm_decoder import ECMDecoder
from .hrmedseg import HRMedSeg
from .hrmedseg_sam import HRMedSegSAM
from .lgvit import LGViT
from .prompt_encoder import PromptEncoder

__all__ = ["ECMDecoder", "HRMedSeg", "HRMedSegSAM", "LGViT", "PromptEncoder"]
