"""Licensed deliveries: consent-filtered, minimised, signed training-data snapshots."""

from consentry.delivery.minimise import (
    KINDS,
    PLACEHOLDERS,
    CorpusLine,
    CorpusScores,
    KindScore,
    MinimisationConfig,
    corpus_scores,
    load_corpus,
    minimise_expr,
    minimise_text,
    placeholder_counts,
)

__all__ = [
    "KINDS",
    "PLACEHOLDERS",
    "CorpusLine",
    "CorpusScores",
    "KindScore",
    "MinimisationConfig",
    "corpus_scores",
    "load_corpus",
    "minimise_expr",
    "minimise_text",
    "placeholder_counts",
]
