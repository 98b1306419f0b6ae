"""The local completion server (`glcic-daemon`), installed as ``glcic.daemon``."""
