"""Benchmark: minimisation of demo-like post texts, engine vs per-row peers.

Not a test: nothing is asserted. Run (issue size: 1,000,000 texts):

    .venv/bin/python bench/minimise_bench.py [--rows 1000000] [--reference-rows 100000]
        [--presidio-rows 5000] [--seed 7]

1. Generate, vectorised, `rows` demo post texts (`consentry.demo.texts.post_texts`: 15
   languages, ~27% with an e-mail, phone, URL, handle, IP or card number, ~12% with a
   mention) and write them to a zstd Parquet file.
2. Consentry: `minimise_expr` on embedded DuckDB, from the Parquet file to a materialised
   Arrow column, all six kinds on.
3. Peer (a): the reference, `minimise_text` (Python `re`), one call per row, on the first
   `reference-rows` texts.
4. Peer (b): Presidio's pattern recognisers (e-mail, phone, URL, IP, credit card; no NER:
   no spaCy model is installable here) and its anonymizer-style span replacement, one call
   per row, on the first `presidio-rows` texts. Skipped with a message when
   `presidio-analyzer` is not installed (it is not a Consentry dependency).
5. Each side runs in its own process (its peak RSS is its own; the data is generated in
   another child, since a child starts from its parent's peak); rates are per post, the
   ratios compare Consentry with each peer. The corpus scores are printed as well.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from _common import print_table, rate, ratio, run_isolated, stopwatch

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "delivery" / "corpus"
PRESIDIO_HINT = (
    "presidio-analyzer is not installed; to add the Presidio peer run\n"
    "    .venv/bin/pip install presidio-analyzer\n"
    "(its pattern recognisers need no spaCy model; the NER one is not used)."
)


def generate(path: str, rows: int, seed: int) -> int:
    """Write `rows` demo post texts to a Parquet file; return how many carry an identifier."""
    from consentry.demo.texts import LANGS, post_texts

    rng = np.random.default_rng(seed)
    texts, kind = post_texts(rng, rng.integers(0, len(LANGS), rows))
    pq.write_table(pa.table({"text": texts}), path, compression="zstd")
    return int((kind > 0).sum())


def ours(path: str) -> dict[str, Any]:
    """Consentry on DuckDB: Parquet in, minimised Arrow column out."""
    from consentry.delivery import minimise_expr
    from consentry.engine import connect

    con = connect("duckdb")
    posts = con.read_parquet(path)
    with stopwatch() as sw:
        out = con.to_pyarrow(posts.select(text=minimise_expr(posts.text)))
    sample = out.column("text").slice(0, 2000).to_pylist()
    return {"rows": out.num_rows, "seconds": sw.seconds, "sample": sample}


def reference(path: str, rows: int) -> dict[str, Any]:
    """The Python `re` reference, one call per row."""
    from consentry.delivery import minimise_text

    texts = pq.read_table(path).column("text").slice(0, rows).to_pylist()
    with stopwatch() as sw:
        out = [minimise_text(text) for text in texts]
    return {"rows": len(out), "seconds": sw.seconds, "sample": out[:2000]}


def presidio(path: str, rows: int) -> dict[str, Any] | None:
    """Presidio's pattern recognisers, one call per row; None when it is not installed."""
    try:
        from presidio_analyzer.predefined_recognizers import (  # type: ignore[import-not-found,import-untyped,unused-ignore]
            CreditCardRecognizer,
            EmailRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            UrlRecognizer,
        )
    except ImportError:
        return None
    recognizers: list[Any] = [
        EmailRecognizer(),
        PhoneRecognizer(),
        UrlRecognizer(),
        IpRecognizer(),
        CreditCardRecognizer(),
    ]
    texts = pq.read_table(path).column("text").slice(0, rows).to_pylist()

    def anonymise(text: str) -> str:
        spans: list[tuple[int, int, str]] = []
        for recognizer in recognizers:
            for found in recognizer.analyze(text, recognizer.supported_entities, None):
                spans.append((found.start, found.end, f"<{found.entity_type}>"))
        # Keep the leftmost, then longest, non-overlapping spans (Presidio's anonymizer rule).
        spans.sort(key=lambda span: (span[0], -span[1]))
        out: list[str] = []
        cursor = 0
        for start, end, label in spans:
            if start >= cursor:
                out.extend((text[cursor:start], label))
                cursor = end
        out.append(text[cursor:])
        return "".join(out)

    with stopwatch() as sw:
        out = [anonymise(text) for text in texts]
    return {"rows": len(out), "seconds": sw.seconds}


def corpus_table() -> str:
    """Scores of the reference on the labelled corpus (the test checks DuckDB agrees)."""
    from consentry.delivery import corpus_scores, load_corpus, minimise_text

    lines = load_corpus(CORPUS / "minimisation.jsonl")
    return corpus_scores(lines, [minimise_text(line.text) for line in lines]).table()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference-rows", type=int, default=100_000)
    parser.add_argument("--presidio-rows", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "posts.parquet")
        # Generated in a child too: a forked child starts with its parent's peak RSS.
        with_pii = run_isolated(generate, path, args.rows, args.seed).value
        print(f"{args.rows:,} demo texts, {with_pii:,} with an identifier slot")
        mine = run_isolated(ours, path)
        ref = run_isolated(reference, path, min(args.reference_rows, args.rows))
        peer = run_isolated(presidio, path, min(args.presidio_rows, args.rows))

    ours_rate = rate(mine.value["rows"], mine.value["seconds"])
    ref_rate = rate(ref.value["rows"], ref.value["seconds"])
    agree = sum(a == b for a, b in zip(mine.value["sample"], ref.value["sample"], strict=False))
    rows: list[list[Any]] = [
        ["consentry (DuckDB)", mine.value["rows"], mine.value["seconds"], ours_rate,
         mine.peak_rss_mib, "1.0x"],
        ["reference (Python re, per row)", ref.value["rows"], ref.value["seconds"], ref_rate,
         ref.peak_rss_mib, ratio(ours_rate, ref_rate)],
    ]  # fmt: skip
    if peer.value is None:
        print(PRESIDIO_HINT)
    else:
        peer_rate = rate(peer.value["rows"], peer.value["seconds"])
        rows.append(
            ["presidio patterns (per row)", peer.value["rows"], peer.value["seconds"],
             peer_rate, peer.peak_rss_mib, ratio(ours_rate, peer_rate)]
        )  # fmt: skip
    print_table(
        "Minimisation (rates per post; ratio = consentry / peer)",
        ["side", "rows", "seconds", "rows/s", "peak RSS MiB", "ratio"],
        rows,
    )
    print(f"\nDuckDB output equals the reference on {agree:,}/{len(ref.value['sample']):,} rows")
    print("\nLabelled corpus (tests/delivery/corpus/minimisation.jsonl)\n" + corpus_table())


if __name__ == "__main__":
    main()
