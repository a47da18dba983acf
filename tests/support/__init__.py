"""Everything the tests share, in one place: fakes, named inputs, builders and reference implementations.

Test modules (``test_*.py``) import helpers from here, never from one another; pytest fixtures stay in the
``conftest.py`` files. Nothing here is collected as a test.

- ``fakes``: ``ScriptedModel`` / ``AsyncScriptedModel`` (a backend that also scores itself, played from ``Step``s),
  ``EchoModel``, ``FamiliarityCalibrator``
- ``guards``: the loop tests' ``make_policy``, ``image_request`` and ``make_guard``
- ``integration``: the integration tests' small ``policy``, ``ACCEPT``/``ABSTAIN``/``ESCALATE`` steps, PNG images,
  ``image_message`` and scripted guards
- ``agents``: ``ScriptedPlanner`` (a tool-calling chat model), ``tool_call``, the ``Camera`` tool
- ``graphs``: ``build_graph``, importable by dotted path (``tests.support.graphs:build_graph``) from another process,
  and a worker process that escalates threads (``python -m tests.support.graphs DB THREAD...``)
- ``faults``: hanging, healthy and flaky models, ``wait_until``, 16-bit PNGs, the reliability tests' policy
- ``calibration``: seeded synthetic calibration data; ``reference_metrics``: plain-loop metric implementations
- ``model_outputs``: ``assert_same_model_output``, the one way to compare what a model produced in two runs (exact
  values exactly, floats within ``MODEL_OUTPUT_TOLERANCE``; ``tests/README.md``); ``scores``: the same for
  scoring results and signals
- ``policy_text``: named policy texts and ``problems`` (the formatted problems of an invalid one)
- ``telemetry``: ``Recorded`` / ``make_recorded``, an ``OtelTelemetry`` over in-memory exporters
- ``tiny_vlms``: tiny random vision-language models of each supported family; ``fake_openai_server``: a fake
  OpenAI-compatible server; ``phoenix``: a real Arize Phoenix server for the end-to-end trace test;
  ``postgres``: a throwaway PostgreSQL server (``running_postgres``) for the escalation tests
"""
