"""The machine side of the cell, over Modbus: the arms, the belt and the line PLC.

* :mod:`~scallop.robot.belt` — the conveyor: encoder scale and direction, belt motion, the
  encoder sources (a Modbus counter);
* :mod:`~scallop.robot.registers` and ``profiles/*.toml`` — register maps as data, one per
  robot program;
* :mod:`~scallop.robot.transport` — Modbus TCP/RTU with reconnect back-off;
* :mod:`~scallop.robot.arm` — the controller's side of the pick handshake (at most once);
* :mod:`~scallop.robot.planning` — pick targets on the belt → checked trajectories;
* :mod:`~scallop.robot.scheduler` — which arm picks which scallop, and when;
* :mod:`~scallop.robot.plc` and ``plc_profiles/*.toml`` — the line PLC: reject gate, infeed,
  stack light, safety relay, the lot (docs/plc-interface.md);
* :mod:`~scallop.robot.protocol` — the handshake's codes and commands as enums;
* :mod:`~scallop.robot.config` — the validated arm configuration; :mod:`~scallop.robot.seq_store`
  — the command sequence kept across restarts; :mod:`~scallop.robot.clock` — the clock the
  timing runs on; :mod:`~scallop.robot.errors` — the typed errors.

Takes belt-frame pick targets, never vision's detections; imports neither ``scallop.vision``
nor the application.
"""
