"""Print the JSON Schema of the usage event.

``make schema`` runs ``python -m schemas > schemas/usage_event.v1.schema.json``.
"""

import sys

from schemas.usage_event import json_schema_text


def main() -> None:
    sys.stdout.write(json_schema_text())


if __name__ == "__main__":
    main()
