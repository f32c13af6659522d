"""cvt_lab: CvT (Wu et al., ICCV 2021) and the paper's ablations, one command each."""

from importlib.metadata import PackageNotFoundError, version

from cvt_lab import timm_registry  # noqa: F401  registers the presets with timm (timm.create_model("cvt13"))
from cvt_lab.models import CvT, create_model, list_models

__all__ = ["CvT", "create_model", "list_models"]
try:
    __version__ = version("cvt_lab")  # the one version: pyproject.toml's, as installed
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
