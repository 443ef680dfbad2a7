"""The contracts: lab report and alert schemas, the normalised result, ClickHouse DDL.

Imports nothing from detectors or streams; Faust records live in ``schemas.records`` so
that pure code can use the contracts without importing Faust.
"""
