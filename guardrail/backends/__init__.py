"""Access to vision-language models."""

from .base import AsyncBackend, Backend

__all__ = ["AsyncBackend", "Backend"]
