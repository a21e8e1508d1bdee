"""Demo platform generator: realistic users, posts, consent, access logs and scrapers.

`generate` writes the five canonical tables as Parquet plus `demo.json` (the designed facts);
`read_facts` reads those facts back. See docs/demo.md.
"""

from consentry.demo.facts import (
    ACCESS_FROM,
    ACCESS_TO,
    ACCOUNTS_FROM,
    ACCOUNTS_TO,
    DEMO_NOW,
    EU_REGIONS,
    FACTS_FILE,
    GENERATOR_VERSION,
    MIN_ACCESS_EVENTS,
    MIN_USERS,
    POLICY_EFFECTIVE,
    POSTS_FROM,
    POSTS_TO,
    PURPOSES,
    REGIONS,
    SCRAPING_THRESHOLD,
    SCRAPING_WINDOW,
    TABLE_ORDER,
    BlockFacts,
    DemoFacts,
    EntityFacts,
    ScraperFacts,
    read_facts,
)
from consentry.demo.generator import ProgressCallback, generate, generate_tables
from consentry.demo.loader import LoadedTable, demo_files, load
from consentry.demo.scrapers import SCRAPERS, ScraperDesign

__all__ = [
    "ACCESS_FROM",
    "ACCESS_TO",
    "ACCOUNTS_FROM",
    "ACCOUNTS_TO",
    "DEMO_NOW",
    "EU_REGIONS",
    "FACTS_FILE",
    "GENERATOR_VERSION",
    "MIN_ACCESS_EVENTS",
    "MIN_USERS",
    "POLICY_EFFECTIVE",
    "POSTS_FROM",
    "POSTS_TO",
    "PURPOSES",
    "REGIONS",
    "SCRAPERS",
    "SCRAPING_THRESHOLD",
    "SCRAPING_WINDOW",
    "TABLE_ORDER",
    "BlockFacts",
    "DemoFacts",
    "EntityFacts",
    "LoadedTable",
    "ProgressCallback",
    "ScraperDesign",
    "ScraperFacts",
    "demo_files",
    "generate",
    "generate_tables",
    "load",
    "read_facts",
]
