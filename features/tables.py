"""Cells of the tables the tools write, safe for the programs that open them."""
from __future__ import annotations

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """``value`` as a spreadsheet shows it but never evaluates it: a text cell it would run as a formula
    (starting with ``=``, ``+``, ``-``, ``@``, tab or CR: OWASP's list) gets a leading ``'``, unless it is a
    number ("-0.5" stays one); non-strings are returned as they are."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_STARTS):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def csv_row(values) -> list:
    return [csv_cell(value) for value in values]


def markdown_cell(value) -> str:
    """``value`` as the text of one Markdown table cell: ``|`` cannot end it early, ``<`` cannot open an
    HTML tag, and a newline cannot end the row."""
    return (str(value).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
            .replace("\r", " ").replace("\n", " "))
