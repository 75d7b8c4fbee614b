"""The application: configuration, the command line, the line runtime, the operator screen,
the production record and the scenario bench. It wires the lower layers together
(``scallop.vision``, ``scallop.robot``, ``scallop.calibration``, ``scallop.models``) and runs
them on hardware or on the simulator (``scallop.sim``); nothing below imports it.

* ``config``, ``cli`` and ``commands/`` — the configuration and one module per command;
* ``build``, ``backends`` — a line from a configuration, hardware or simulator behind each part;
* ``line/`` — the line runtime (its ``__init__`` lists the parts); ``tracking``, ``frames``
  (encoder counts for cameras without a latch), ``stats``, ``alarms``, ``line_api`` (what the
  screen and OPC UA read);
* ``web``, ``web_guard``, ``web_server``, ``web/`` (the page), ``auth``, ``i18n`` — the operator
  screen; ``opcua``, ``metrics`` — the plant's systems;
* ``record/`` — the production record; ``backup``, ``doctor``, ``systemd``, ``deploy/`` — the plant PC;
* ``capture``, ``shadow``, ``registry``, ``labels``, ``evaluation`` — the model loop;
* ``scenario/`` — the scenario bench; ``progress``, ``version`` — small helpers.
"""
