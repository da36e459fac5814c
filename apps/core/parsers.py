"""The API's JSON parser: DRF's, with the nesting bound of `inputs.MAX_JSON_DEPTH`.

Python's json decoder raises RecursionError (not ValueError) on very deep input, which DRF's
parser lets through as a 500; here it is a 400 like any other unparseable body, and so is a
document that parses but nests deeper than the code after it can safely walk."""

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from .inputs import JSONTooDeep, check_json_depth


class BoundedJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return check_json_depth(super().parse(stream, media_type, parser_context))
        except RecursionError:
            raise ParseError(f"JSON parse error - {JSONTooDeep()}") from None
        except JSONTooDeep as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
