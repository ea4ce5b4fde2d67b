"""Experiment configs: each file exposes `get_config(arg: str | None) -> ConfigDict`."""
