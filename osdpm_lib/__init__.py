"""OSDPM experiment book: remote-sensing image<->text retrieval with CLIP, DAPN and OSFCM."""

__version__ = "0.1.0"
