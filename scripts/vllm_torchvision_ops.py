"""Lets the CUDA-built torchvision import beside the CPU build of torch, in the vLLM environment only.

Installed by ``scripts/vllm_env.sh`` into that environment's site-packages, with a ``.pth`` line that imports it
at start-up (in the server and in every process vLLM spawns). Why it is needed: vLLM's LLaVA model imports
``transformers.models.pixtral.image_processing_pixtral``, which imports ``torchvision.transforms.v2`` (pure
Python); but the only torchvision 0.28.0 (the release for torch 2.13) a resolver finds on PyPI is built against CUDA
torch. Its ``_C`` extension cannot load beside the CPU torch (it links ``libtorch_cuda.so``); torchvision allows
that, except that ``torchvision/_meta_registrations.py`` then calls ``torch.library.register_fake`` for
``torchvision::nms`` and ``torchvision::qnms``, operators that only ``_C`` defines, and the import fails with
``operator torchvision::nms does not exist``.

What this does: the first time ``torchvision._meta_registrations`` is imported, and only if ``_C`` did not load
(``torchvision.extension._has_ops()`` is false), it defines those two operators' schemas, so the registration
finds them. No kernel is registered: calling ``torchvision.ops.nms`` still fails (torchvision's own "Couldn't load
custom C++ ops"), and serving a LLaVA model never calls it. Nothing else is imported at start-up (torch is imported
only when torchvision is), and no file of torchvision, vLLM or the project is changed.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)
_library: Any = None  # kept alive: a torch.library.Library drops its definitions when collected


class _BeforeMetaRegistrations(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        global _library
        if name != "torchvision._meta_registrations":
            return None
        sys.meta_path.remove(self)
        import torch
        import torchvision.extension

        if not torchvision.extension._has_ops():
            _library = torch.library.Library("torchvision", "DEF")
            for schema in _SCHEMAS:
                _library.define(schema)
        return None  # the ordinary finders import the module itself


sys.meta_path.insert(0, _BeforeMetaRegistrations())
