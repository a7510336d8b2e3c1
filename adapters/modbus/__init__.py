"""Modbus TCP / RTU: polling source, write-back sink, byte-order probe and simulated machines.

Kinds: ``modbus-tcp`` (one device or gateway unit), ``modbus-rtu`` (one RS-485 line with one or more slaves
polled in turn) and the ``modbus-write`` sink. Modules, by role:

- `config`: the profiles and the sink, validated without touching the network (only this module loads with the
  registry, so `validate` never imports pymodbus);
- `codec`: our own register decoding and encoding for every dtype and byte/word order (ABCD, CDAB, BADC, DCBA),
  chosen once per (dtype, order) at start-up;
- `plan`: the read planner (the fewest requests, never touching a forbidden address) and its report;
- `client`: pymodbus clients with one timeout per request and no library-side reconnect;
- `source` (`ModbusSource`), `sink` (`ModbusWriteSink`), `probe` (`probe_order`), `simulator`
  (`SimulatedMachine`, `simulate`).

Options a profile sets (all documented field by field in `config`): connection (`host`/`port`/`device_id`, or
`serial_port`/`baudrate`/`parity`/`stopbits` and `devices` for a line), `poll_interval_ms` and named
`poll_groups`, planner limits (`max_gap_registers`, `max_registers_per_read`, `max_bits_per_read`), `forbidden`
addresses (never read) and `writable` ones, and the `tags`: `table`, `address` (0-based), `dtype`, `bit`,
`length`, `byte_order`, `scale`/`offset`, `unit`, and a per-tag `poll_interval_ms` or `group`.

Behaviour on a bad day, by design:

- a Modbus exception response (illegal address, device busy) gives ``quality="bad"`` readings for the tags of
  that request and a counted error; polling goes on;
- a slave on a shared RS-485 line that stops answering is skipped for a back-off period (bad readings at its
  poll rate), so one dead drive never stalls the others;
- a poll that outlasts its period (a slow device, a busy gateway) is followed at once by the next, counted in
  `overruns`: the tags stay at most about one poll old, but such a device is polled back to back, so when
  `overruns` keeps growing raise `poll_interval_ms` (or split the tags into slower `poll_groups`);
- a request answered more than two poll periods after its previous answer (the device, the network or this
  machine stalled; or the first answer after an outage) is counted in `late_reads` and logged once per burst as
  `event=modbus_data_late ... gap_ms=... period_ms=...`: the tags' values were that old when it came. An exception
  response counts as an answer (its tags are bad, and counted in `modbus_exceptions`);
- a request without an answer within ``timeout_s`` gives bad readings for its tags, counts in ``timeouts`` and is
  logged once per burst as ``event=modbus_timeout device=... slave=... table=... start=...`` (TCP; a silent
  RS-485 slave is ``modbus_slave_silent``); three in a row on TCP end the connection (below);
- an answer pymodbus has no request for is ignored by it, and shows as one warning per burst and device,
  ``event=modbus_stray_answer device=... kind=...``: ``answer_after_timeout`` (it came after its request timed
  out, between two requests) or ``other_transaction`` (the same, while the next request waited: ``expected`` and
  ``got`` transaction ids) are a device slower than ``timeout_s``; ``other_device`` (``expected=1 got=255``) is a
  device or gateway answering with another unit id than the profile's ``device_id``, not a timing problem.
  pymodbus's own lines for these (``No response received ...``, ``ERROR: received pdu without a corresponding
  request``, ...), which name no device, go to debug level;
- a lost TCP connection or serial port ends `ModbusSource.stream` (and `batches`) with `AdapterError`;
  `adapters.supervise.supervise` reopens it with back-off and jitter;
- a write outside the sink's `writable` allow-list is refused at validation and again at run time.

Example profile tag::

    - {name: speed, table: holding, address: 0, dtype: int16, scale: 0.1, unit: rpm}
"""

from __future__ import annotations

from adapters.modbus.config import ModbusRtuConfig, ModbusTcpConfig, ModbusWriteConfig
from adapters.registry import Kind

__all__ = ["KINDS"]

_SOURCE = "adapters.modbus.source:ModbusSource"
_SIMULATOR = "adapters.modbus.simulator:simulate"
_REPORT = "adapters.modbus.plan:plan_report"

KINDS = (
    Kind("modbus-tcp", "device", ModbusTcpConfig, _SOURCE, simulator=_SIMULATOR, report=_REPORT),
    Kind("modbus-rtu", "device", ModbusRtuConfig, _SOURCE, simulator=_SIMULATOR, report=_REPORT),
    Kind("modbus-write", "sink", ModbusWriteConfig, "adapters.modbus.sink:ModbusWriteSink"),
)
