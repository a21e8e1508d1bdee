"""Getting data into the lake: canonical tables, file readers, validation and import.

`import_files` and `import_arrow` validate input against `consentry.schema` and
merge it into the lake idempotently (see docs/tables.md).
"""

from consentry.schema import TABLES, ColumnSpec, TableSpec, arrow_schema, table_spec
from consentry.sources.importer import ImportResult, import_arrow, import_files
from consentry.sources.readers import FORMATS

__all__ = [
    "FORMATS",
    "TABLES",
    "ColumnSpec",
    "ImportResult",
    "TableSpec",
    "arrow_schema",
    "import_arrow",
    "import_files",
    "table_spec",
]
