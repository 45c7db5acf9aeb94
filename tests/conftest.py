import os

# Before any QApplication exists (reference/gui.md): GUI tests run offscreen.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# No code path may reach the network; make any accidental hub call fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
