"""What TRL's tests share: the exact third-party warnings a GRPO run may raise (filtered, never silenced wholesale)."""

from __future__ import annotations

__all__ = ["TRL_DEPRECATIONS"]

# transformers 5 deprecates the gradient-checkpointing names that TRL 1.16 still calls (exact messages only).
TRL_DEPRECATIONS = [
    "ignore:`gradient_checkpointing` is deprecated:FutureWarning",
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning",
    "ignore:`gradient_checkpointing_disable` is deprecated:FutureWarning",
    "ignore:`gradient_checkpointing_enable` is deprecated:FutureWarning",
]
