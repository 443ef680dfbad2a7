"""Expand the Grafana ClickHouse plugin's macros and template variables, as the plugin does.

Used by the tests to run every dashboard query against chDB. Follows the plugin's documented
expansions ($__timeFilter, $__dateFilter, $__fromTime, $__toTime, $__timeInterval,
$__interval_s, $__conditionalAll) and Grafana's ${var}, ${var:singlequote} and $var forms.
"""

from __future__ import annotations

import re
from datetime import datetime

ALL = "$__all"


def _args(sql: str, start: int) -> tuple[list[str], int]:
    """Comma-separated arguments of the call whose '(' is at start, respecting nested parentheses."""
    depth, args, current = 0, [], []
    for i in range(start, len(sql)):
        ch = sql[i]
        if ch == "(":
            depth += 1
            if depth == 1:
                continue
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(current).strip())
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    raise ValueError(f"unbalanced parentheses in {sql!r}")


def expand(sql: str, start: datetime, end: datetime, interval_s: int, variables: dict[str, str | list[str]]) -> str:
    frm, to = int(start.timestamp()), int(end.timestamp())

    def call(name: str, render) -> None:
        nonlocal sql
        while (at := sql.find(name + "(")) >= 0:
            args, stop = _args(sql, at + len(name))
            sql = sql[:at] + render(args) + sql[stop:]

    def conditional(args: list[str]) -> str:
        condition, variable = args
        return "1=1" if variables.get(variable.lstrip("$").strip("{}")) == ALL else condition

    call("$__conditionalAll", conditional)
    call("$__timeFilter", lambda a: f"{a[0]} >= toDateTime({frm}) AND {a[0]} <= toDateTime({to})")
    call("$__dateFilter", lambda a: f"{a[0]} >= toDate('{start:%Y-%m-%d}') AND {a[0]} <= toDate('{end:%Y-%m-%d}')")
    call("$__timeInterval", lambda a: f"toStartOfInterval(toDateTime({a[0]}), INTERVAL {interval_s} second)")
    sql = sql.replace("$__fromTime", f"toDateTime({frm})").replace("$__toTime", f"toDateTime({to})")
    sql = sql.replace("$__interval_s", str(interval_s))

    def variable(match: re.Match) -> str:
        name, fmt = match.group(1) or match.group(3), match.group(2)
        value = variables[name]
        values = value if isinstance(value, list) else [value]
        if fmt == "singlequote":
            return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
        return ",".join(values)

    return re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)", variable, sql)
