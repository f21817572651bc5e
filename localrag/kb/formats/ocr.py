"""OCR for scanned PDF pages and images (.png/.jpg/.tiff): RapidOCR, optional (``localrag[ocr]``).

RapidOCR (Apache-2.0) runs PaddleOCR's detection and recognition models on ONNX Runtime; its wheel
ships the models (``rapidocr/models/*.onnx``), so nothing is downloaded at run time (the test
suite checks that the engine starts with the network unreachable). Its default recognition
model reads Chinese and English, mixed. Without the extra installed, ``available()`` is False:
scanned PDF pages are counted (``ParsedDocument.unread_pages``) and an image is skipped with a
reason that names the fix.

A PDF page is a scan when it has (almost) no text layer and shows an image: blank pages are not
sent to OCR. Text found by OCR is marked so: ``ParsedDocument.ocr_pages``, which ingest stores as
the file type ``<type>+ocr`` of those chunks.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from pathlib import Path

from localrag.kb.document import OCR_HINT, NeedsOCR, ParsedDocument, ParseError, Section

# fewer visible characters than this on a page counts as "no text layer" (a scan's stray
# page number, a watermark)
MIN_TEXT_CHARS = 16
# PDF pages render at 2x (144 dpi): body text of a 300-dpi scan stays legible, the detector
# limits the long side to 2000 px anyway
_RENDER_SCALE = 2.0
# a TIFF may hold many pages; beyond this they are not read (a fax archive is not a document)
MAX_IMAGE_FRAMES = 500

_engine = None
_lock = threading.Lock()


def available() -> bool:
    """Whether the OCR extra is installed (checked without importing it)."""
    return all(importlib.util.find_spec(m) is not None for m in ("rapidocr", "onnxruntime"))


def _get_engine():
    global _engine
    with _lock:
        if _engine is None:
            from rapidocr import RapidOCR

            _engine = RapidOCR(params={"Global.log_level": "error"})
        return _engine


def image_text(image) -> str:
    """The text RapidOCR finds in a PIL image or numpy array, one detected line per line."""
    import numpy as np

    if hasattr(image, "convert"):
        image = np.asarray(image.convert("RGB"))
    result = _get_engine()(image)
    lines = [t.strip() for t in (getattr(result, "txts", None) or ()) if t and t.strip()]
    return "\n".join(lines)


def is_scanned(page, text: str) -> bool:
    """A pypdfium2 page with (almost) no text layer that shows an image."""
    if len(re.sub(r"\s+", "", text)) >= MIN_TEXT_CHARS:
        return False
    import pypdfium2.raw as pdfium_c

    try:
        return any(True for _ in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=3))
    except Exception:  # an odd page tree: assume it is an image if there is no text
        return True


def page_text(page) -> str:
    """OCR of one pypdfium2 page, rendered."""
    bitmap = page.render(scale=_RENDER_SCALE)
    try:
        return image_text(bitmap.to_pil())
    finally:
        bitmap.close()


def read_image(path: Path, filetype: str):
    """An image file: each frame (a TIFF may hold pages) is a page whose text OCR finds."""
    if not available():
        raise NeedsOCR(f"an image: its text needs OCR; {OCR_HINT}", 1)
    from PIL import Image, ImageSequence, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = 200_000_000  # a decompression bomb stays an error, a big scan does not
    try:
        img = Image.open(path)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise ParseError(f"damaged image (cannot be decoded: {type(exc).__name__})") from None
    sections = []
    with img:
        try:
            for i, frame in enumerate(ImageSequence.Iterator(img)):
                if i >= MAX_IMAGE_FRAMES:
                    break
                text = image_text(frame)
                if text:
                    sections.append(Section(text, i + 1, ()))
        except (OSError, SyntaxError, ValueError) as exc:
            if not sections:
                raise ParseError(f"damaged image (cannot be decoded: {type(exc).__name__})") from None
    if not sections:
        raise ParseError("no text found in the image (OCR)")
    return ParsedDocument(path, "image", sections, None, ocr_pages={s.page for s in sections})
