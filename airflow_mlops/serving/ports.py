"""The local endpoint port of each model, as the example DAGs choose it (light enough for a DAG file to import)."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from airflow_mlops.registry import validate_model_name

if TYPE_CHECKING:
    from collections.abc import Mapping

#: First port and number of ports :func:`port_for_model` derives endpoint ports from.
MODEL_PORTS_FIRST, MODEL_PORTS_COUNT = 5100, 900


def port_for_model(model_name: str, first: int = MODEL_PORTS_FIRST, count: int = MODEL_PORTS_COUNT) -> int:
    """
    An endpoint port derived from the model's name: ``first + crc32(name) % count``, the same on every worker.

    Lets one DAG serve many models on the local target, one port each. Two names can map to the same port: the
    second deploy is then refused with a :class:`PortInUseError` naming the model that holds it; give one of
    them a port of its own.
    """
    for value in (first, count):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"first and count must be integers, got {first!r} and {count!r}")
    if count < 1 or first < 1 or first + count - 1 > 65535:
        raise ValueError(f"ports {first}..{first + count - 1} are not valid TCP ports")
    return first + zlib.crc32(validate_model_name(model_name).encode()) % count


def serving_port(
    model_name: str,
    port: int | str | None = None,
    *,
    pinned: int | str | None = None,
    defaults: Mapping[str, int] | None = None,
) -> int:
    """
    The local endpoint port of *model_name*, as the example DAGs choose it (one port per model).

    *port* when given (a DAG param), else *pinned* (one port for every model, e.g. from the environment), else
    the model's entry in *defaults*, else :func:`port_for_model`. Empty values count as not given.

    :raises ValueError: when the port chosen is not a TCP port.
    """
    for value in (port, pinned):
        if value is None or value == "":
            continue
        try:
            chosen = int(value)
        except (TypeError, ValueError):
            chosen = 0
        if isinstance(value, bool) or not 1 <= chosen <= 65535:
            raise ValueError(f"serving port of model {model_name!r} must be from 1 to 65535, got {value!r}")
        return chosen
    if defaults and model_name in defaults:
        return int(defaults[model_name])
    return port_for_model(model_name)
