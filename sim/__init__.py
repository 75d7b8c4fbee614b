"""The simulator: one more backend behind the hardware's interfaces.

A world of scallops on a belt (:mod:`~scallop.sim.world`, drawn by
:mod:`~scallop.sim.scene`), a hardware-triggered camera over it (:mod:`~scallop.sim.camera`),
arms that speak the same Modbus as a real robot program (:mod:`~scallop.sim.arm`), a virtual
clock (:mod:`~scallop.sim.clock`), labelled data sets (:mod:`~scallop.sim.dataset`),
calibration boards (:mod:`~scallop.sim.boards`) and its ground truth for whoever runs a line on
it (:mod:`~scallop.sim.truth`). Never imports the application.
"""
