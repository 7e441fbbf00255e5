# The C extension services/common/_fastwalk.c (built when a compiler is present; selection.py
# and hostile_json.py fall back to their Python walks otherwise).

from typing import Any

from typing_extensions import Buffer

def locate(event: dict[str, Any], root: Any, /) -> list[tuple[Any, str | int, str]]: ...
def brackets(raw: Buffer, /) -> int: ...
