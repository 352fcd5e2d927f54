"""Third-party noise is silenced through the libraries' own settings (issue 12, item 15)."""

from __future__ import annotations

import logging
import os

from diffparts.logs import quiet_third_party


def test_transformers_and_diffusers_log_errors_only_and_show_no_bars(monkeypatch):
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for key in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(key, "")  # recorded, so the test's own settings are undone afterwards
        monkeypatch.delenv(key)
    tlog.set_verbosity_warning()
    dlog.set_verbosity_warning()
    try:
        quiet_third_party(import_now=True)
        assert tlog.get_verbosity() == logging.ERROR and dlog.get_verbosity() == logging.ERROR
        assert not tlog.is_progress_bar_enabled() and not dlog.is_progress_bar_enabled()
        # the user's own setting wins
        tlog.set_verbosity_warning()
        monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
        quiet_third_party()
        assert tlog.get_verbosity() == logging.WARNING
    finally:
        os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        tlog.enable_progress_bar()
        dlog.enable_progress_bar()
