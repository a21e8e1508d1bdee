"""Policy as code: a validated YAML file of dated policy versions.

A version states the purposes posts may be used for (with defaults per region, for minors
and for unknown ages), how long each category of data is kept, the scraping clause and the
revocation SLA. docs/policy.md documents the grammar and every field.
"""

from consentry.policy.diff import ChangeKind, PolicyChange, diff_versions
from consentry.policy.duration import Duration
from consentry.policy.loader import default_policy_path, load_policy, parse_policy
from consentry.policy.model import (
    AIPREF_CATEGORIES,
    ANONYMISABLE_FIELDS,
    POLICY_FIELDS,
    RETENTION_CATEGORIES,
    RETENTION_TRIGGERS,
    RETIRED_AIPREF_CATEGORIES,
    AiprefCategory,
    Choice,
    PolicyDocument,
    PolicyFile,
    PolicyVersion,
    PolicyVersionNotFoundError,
    Purpose,
    RetentionCategory,
    RetentionRule,
    ScrapingTerms,
    region_default_for,
)
from consentry.policy.regions import REGION_GROUPS, expand_region, is_region, region_name
from consentry.policy.wording import (
    describe_purpose,
    describe_retention,
    describe_scraping,
    format_money,
)

__all__ = [
    "AIPREF_CATEGORIES",
    "ANONYMISABLE_FIELDS",
    "POLICY_FIELDS",
    "REGION_GROUPS",
    "RETENTION_CATEGORIES",
    "RETENTION_TRIGGERS",
    "RETIRED_AIPREF_CATEGORIES",
    "AiprefCategory",
    "ChangeKind",
    "Choice",
    "Duration",
    "PolicyChange",
    "PolicyDocument",
    "PolicyFile",
    "PolicyVersion",
    "PolicyVersionNotFoundError",
    "Purpose",
    "RetentionCategory",
    "RetentionRule",
    "ScrapingTerms",
    "default_policy_path",
    "describe_purpose",
    "describe_retention",
    "describe_scraping",
    "diff_versions",
    "expand_region",
    "format_money",
    "is_region",
    "load_policy",
    "parse_policy",
    "region_default_for",
    "region_name",
]
