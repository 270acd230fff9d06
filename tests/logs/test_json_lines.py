"""Whatever a log call carries, in its message or its extra fields (newlines, quotes, control
characters, lone surrogates, values JSON has no notation for), the JSON format writes exactly one
line, ASCII and valid UTF-8, holding one JSON object that gives the text back."""

from __future__ import annotations

import io
import json
import logging
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from config.logging import formatter

#: Attributes a LogRecord has, or that logging refuses in ``extra``.
RECORD_ATTRIBUTES = {*logging.LogRecord("", 0, "", 0, "", (), None).__dict__, "message", "asctime"}
#: Fields the setup writes itself; an extra of the same name does not replace them.
OWN_FIELDS = {"timestamp", "level", "logger", "event", "process", "exception", "correlation_id"}

hostile_text = st.text(
    st.one_of(
        st.characters(exclude_categories=()),  # every category, surrogates included
        st.characters(categories=["Cs", "Cc", "Zl", "Zp"]),  # more often the awkward ones
        st.sampled_from(['"', "\\", "\n", "\r", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "%"]),
    )
)


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("Unprintable()")  # how hypothesis shows it in a failing example


scalars = st.one_of(
    hostile_text,
    st.integers(),
    st.floats(),  # NaN and the infinities included: JSON has no notation for them
    st.booleans(),
    st.none(),
    st.binary(max_size=20),
    st.just(Unprintable()),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(hostile_text, inner, max_size=3),
        st.dictionaries(st.tuples(st.integers()), inner, max_size=2),  # keys JSON cannot have
    ),
    max_leaves=8,
)
extras = st.dictionaries(
    hostile_text.filter(lambda key: key not in RECORD_ATTRIBUTES), values, max_size=4
)


def logged(message: str, args: tuple[Any, ...], extra: dict[str, Any]) -> bytes:
    """What one log call writes through the JSON formatter, as bytes on the wire."""
    out = io.BytesIO()
    stream = io.TextIOWrapper(out, encoding="utf-8", errors="strict", newline="\n")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format="json"))
    logger = logging.getLogger("tests.logs.hostile")
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.DEBUG
    try:
        logger.info(message, *args, extra=extra)
    finally:
        logger.handlers = []
    stream.flush()
    return out.getvalue()


@given(message=hostile_text, argument=hostile_text, extra=extras)
def test_any_text_in_a_message_or_extra_fields_is_one_json_object_on_one_line(
    message: str, argument: str, extra: dict[str, Any]
) -> None:
    message = message.replace("%", "%%") + " %s"  # the argument goes through %-formatting
    written = logged(message, (argument,), extra)
    assert written.isascii()
    lines = written.decode("utf-8").split("\n")
    assert len(lines) == 2 and lines[1] == "", lines  # one line, and its line end
    line = json.loads(lines[0], parse_constant=_refuse)
    assert isinstance(line, dict)
    assert line["message"] == message % argument
    for key, value in extra.items():
        if key in OWN_FIELDS:
            continue
        plain = value is None or isinstance(value, str | bool | int)
        if plain or (isinstance(value, float) and math.isfinite(value)):
            assert line[key] == value
        else:
            assert key in line  # as JSON, or as its repr


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")
