"""Training of the completion network and its discriminators, installed as ``glcic.training``."""
