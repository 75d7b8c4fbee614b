"""The application: configuration, the command line, the line runtime, the operator screen,
the production record and the scenario bench. It wires the lower layers together
(``scallop.vision``, ``scallop.robot``, ``scallop.calibration``, ``scallop.models``) and runs
them on hardware or on the simulator (``scallop.sim``); nothing below imports it."""
