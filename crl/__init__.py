"""crl: contrastive reinforcement-learning agents on one shared replay, encoder library and loop."""

__version__ = "0.1.0"
