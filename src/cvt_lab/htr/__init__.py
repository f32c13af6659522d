"""Handwritten text recognition: CvT (or a CRNN reference) as a line recognizer trained with CTC on variable-width
text lines (``experiment=htr``). Models in :mod:`.model`, batching of variable-width lines in :mod:`.batching`,
data sets in :mod:`.digit_lines` and :mod:`.folder`, the LightningModule in :mod:`.module`."""

from cvt_lab.htr.charset import Charset
from cvt_lab.htr.model import CRNN, CvTLineRecognizer, build_crnn, build_cvt_line_recognizer

__all__ = ["CRNN", "Charset", "CvTLineRecognizer", "build_crnn", "build_cvt_line_recognizer"]
