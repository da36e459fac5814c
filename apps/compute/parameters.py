"""Validate run parameters against a notebook version's declared parameters.

papermill pastes parameter names into code unescaped and renders values with repr-like
translators, so only declared identifiers with values of the declared type are accepted.
"""

import keyword
from typing import Any

from django.core.exceptions import ValidationError

# JSON value checks per papermill inferred type name; "None" (unknown) accepts any JSON value.
_TYPE_CHECKS: dict[str, tuple[str, Any]] = {
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "tuple": ("a list", lambda v: isinstance(v, list)),
    "dict": ("an object", lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v)),
}


def validate_parameters(values: Any, declared: list[dict[str, Any]]) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValidationError({"parameters": "Parameters must be a JSON object of name: value."})
    by_name = {p["name"]: p for p in declared}
    errors: list[str] = []
    for name, value in values.items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            errors.append(f"'{name}' is not a valid parameter name.")
            continue
        if name not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            errors.append(f"'{name}' is not a parameter of this notebook (declared: {known}).")
            continue
        type_name = by_name[name].get("inferred_type_name") or "None"
        check = _TYPE_CHECKS.get(type_name)
        if check is not None and value is not None and not check[1](value):
            errors.append(f"'{name}' must be {check[0]} (declared {type_name}), got {type(value).__name__}.")
    if errors:
        raise ValidationError({"parameters": errors})
    return dict(values)
