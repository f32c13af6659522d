"""Models: the CvT backbone and the factory that builds it from the presets in ``conf/model/``."""

from cvt_lab.models.cvt import CvT
from cvt_lab.models.factory import build_cvt, create_model, list_models, load_preset

__all__ = ["CvT", "build_cvt", "create_model", "list_models", "load_preset"]
