"""mmdet glue: registering the MuSu head (imported through ``custom_imports``)."""
from .. import checkpoint_compat  # noqa: F401  (mmengine resume under torch >= 2.6)
from .musu_head import MuSuHead, initial_anchor_biases

__all__ = ["MuSuHead", "initial_anchor_biases"]
