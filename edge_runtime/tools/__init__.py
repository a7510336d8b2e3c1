"""Tooling above the runtime: the demo, `simulate`, the bench runner, the mosquitto helper, data-set readers and
offline evaluation. It may import the runtime; the runtime (`edge-runtime run`) never imports it, so a running
line loads only what it needs."""
