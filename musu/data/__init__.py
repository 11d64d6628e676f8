from .synthetic import CLASSES, SyntheticSpec, generate

__all__ = ["CLASSES", "SyntheticSpec", "generate"]
