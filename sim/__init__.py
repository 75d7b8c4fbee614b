"""The simulator: one more backend behind the hardware's interfaces.

A world of scallops on a belt (:mod:`~scallop.sim.world`, drawn by
:mod:`~scallop.sim.scene`), a hardware-triggered camera over it (:mod:`~scallop.sim.camera`),
arms that speak the same Modbus as a real robot program (:mod:`~scallop.sim.arm`), a virtual
clock (:mod:`~scallop.sim.clock`), labelled data sets (:mod:`~scallop.sim.dataset`),
calibration boards (:mod:`~scallop.sim.boards`) and its ground truth for whoever runs a line on
it (:mod:`~scallop.sim.truth`). Also: the arrivals on the belt (:mod:`~scallop.sim.arrivals`),
the fluorescence channel (:mod:`~scallop.sim.fluorescence`), the line PLC
(:mod:`~scallop.sim.plc`) and a Modbus belt counter (:mod:`~scallop.sim.counter`) on a shared
Modbus server (:mod:`~scallop.sim.modbus_server`), the arm's program (:mod:`~scallop.sim.arm_program`),
a camera stream in its own process (:mod:`~scallop.sim.stream`), a rig of them for the
commissioning run (:mod:`~scallop.sim.rig`, :mod:`~scallop.sim.commission`), its validated
configuration (:mod:`~scallop.sim.config`) and the shipped scenarios (``scenarios/*.toml``).
Never imports the application.
"""
