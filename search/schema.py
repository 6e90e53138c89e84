"""Write the space file's JSON Schema, so an editor checks a space file as it is typed.

    python -m search.schema > space.schema.json
    # VS Code (YAML extension): "yaml.schemas": {"./space.schema.json": "spaces/*.yaml"}
"""

from __future__ import annotations

import json
import sys

from cvae_core.cli import ArgumentParser

from .settings import RUN_NAME, Final, Search
from .space import space_json_schema


def space_file_schema() -> dict:
    search, final = Search.model_json_schema(), Final.model_json_schema()
    space, space_definitions = space_json_schema()
    definitions = {**space_definitions, **search.pop("$defs", {}), **final.pop("$defs", {})}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "cvae-search space file",
        "type": "object",
        "additionalProperties": False,
        "required": ["space"],
        "properties": {
            "name": {"type": "string", "pattern": RUN_NAME,
                     "description": "the run folder's name (default: the file's name)"},
            "space": space,
            "search": {"anyOf": [search, {"type": "null"}]},
            "final": {"anyOf": [final, {"type": "null"}]},
        },
        "$defs": definitions,
    }


def main(argv: list[str] | None = None) -> int:
    ArgumentParser(prog="python -m search.schema", description=__doc__.splitlines()[0]).parse_args(argv)
    json.dump(space_file_schema(), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
