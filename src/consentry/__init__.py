"""Consentry: share a social platform's posts with AI developers honestly.

Every opt-out is honoured before data leaves, every delivered record can be traced and
revoked, data is kept no longer than the policy says, and bulk scrapers are measured and
billed under a published liquidated-damages clause.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
