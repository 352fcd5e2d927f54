"""What a run shows: pictures as size-bounded PNG data URIs and the self-contained HTML report.

The Prefect dashboard (``flows/artifacts.py``) and the HTML report both use these; nothing here
imports Prefect.
"""

from diffparts.report.document import render_report, write_report
from diffparts.report.images import (ARTIFACT_MAX_BYTES, PICTURE_MAX_BYTES, PICTURE_MAX_SIDE, decode_data_uri,
                                     png_data_uri)

__all__ = ["ARTIFACT_MAX_BYTES", "PICTURE_MAX_BYTES", "PICTURE_MAX_SIDE", "decode_data_uri", "png_data_uri",
           "render_report", "write_report"]
