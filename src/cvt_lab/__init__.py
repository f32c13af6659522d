"""cvt_lab: CvT (Wu et al., ICCV 2021) and the paper's ablations, one command each."""

from cvt_lab import timm_registry  # noqa: F401  registers the presets with timm (timm.create_model("cvt13"))
from cvt_lab.models import CvT, create_model, list_models

__all__ = ["CvT", "create_model", "list_models"]
__version__ = "0.1.0"
