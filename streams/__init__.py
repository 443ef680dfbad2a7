"""The Faust app and everything around it: topics, agents, ClickHouse sink, metrics, CLI.

Depends on detectors and schemas, never the other way round.
"""
