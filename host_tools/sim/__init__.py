"""Meter simulators: independent peers for the tests and the demo (CPython only).

household     PV, load, battery and EV profiles (pvlib, demandlib), a Clock
dlms_meter    a DLMS/COSEM meter on gurux-dlms (GPL-2.0: imported only here)
modbus_devices  SDM630, SunSpec inverter, wallbox on pymodbus servers
ports         pty pairs and serial ports by path
faults        fault injection shared by the simulators
runner        `pgw sim dlms|modbus`

Nothing is imported here: `import host_tools.sim.household` stays light.
"""
