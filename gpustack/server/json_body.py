"""Request bodies parsed as JSON, where nesting too deep for the parser is a client's error, not a crash."""

from __future__ import annotations

import json
from typing import Any

NOT_JSON = "the request body is not valid JSON"
TOO_DEEP = "the request body nests JSON too deeply (arrays or objects hundreds of levels deep); flatten it"


class BodyNotJSON(ValueError):
    """The body cannot be parsed; the message says why, in words a client can act on."""


def loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        # The C parser gives up at the interpreter's recursion limit (about a thousand levels) and
        # raises this rather than a JSONDecodeError; no legitimate request nests that deep.
        raise BodyNotJSON(TOO_DEEP) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BodyNotJSON(NOT_JSON) from None
