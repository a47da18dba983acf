"""Integrations: the guard inside LangGraph graphs and LangChain agents, and view providers from user code.

- :mod:`~guardrail.messages`: LangChain messages <-> :class:`~guardrail.Request` (standard blocks);
- :mod:`~guardrail.integrations.langgraph`: guard and human-review nodes, ``guardrail_graph``, resuming;
- :mod:`~guardrail.integrations.middleware`: ``GuardrailMiddleware`` for ``create_agent``;
- :mod:`~guardrail.integrations.chat_model`: ``GuardrailChatModel``, a backend as a LangChain chat model;
- :mod:`~guardrail.integrations.views`: recapture, callables and tools as view providers;
- :mod:`~guardrail.integrations.escalations`: pending escalations in a SQLite checkpointer, and resolving one;
- :mod:`~guardrail.integrations.image_store`: the images of escalations, stored once by content hash;
- :mod:`~guardrail.integrations.review_app`: the review page (``guardrail escalations serve``; the ``review``
  extra, imported only when used).
"""

from __future__ import annotations

from ..messages import messages_from_request, request_from_messages
from ._review import Approve, DirectAnswer, Edit, Reject, ReviewDecision, ReviewError, parse_review
from .chat_model import GuardrailChatModel
from .escalations import PendingEscalation, list_escalations, load_graph_factory, open_saver, resolve_escalation
from .image_store import ImageStore
from .langgraph import (
    GuardSource,
    GuardState,
    add_guardrail_nodes,
    aresume_escalation,
    guardrail_graph,
    pending_payload,
    resume_escalation,
)
from .middleware import GuardrailMiddleware
from .views import CallableViewProvider, RecaptureProvider, ToolViewProvider, as_view_provider

__all__ = [
    "Approve",
    "CallableViewProvider",
    "DirectAnswer",
    "Edit",
    "GuardSource",
    "GuardState",
    "GuardrailChatModel",
    "GuardrailMiddleware",
    "ImageStore",
    "PendingEscalation",
    "RecaptureProvider",
    "Reject",
    "ReviewDecision",
    "ReviewError",
    "ToolViewProvider",
    "add_guardrail_nodes",
    "aresume_escalation",
    "as_view_provider",
    "guardrail_graph",
    "list_escalations",
    "load_graph_factory",
    "messages_from_request",
    "open_saver",
    "parse_review",
    "pending_payload",
    "request_from_messages",
    "resolve_escalation",
    "resume_escalation",
]
