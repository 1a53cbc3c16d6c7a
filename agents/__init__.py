"""One file per algorithm; each defines its Config dataclass (paper defaults) and its Agent."""
