"""A reference client for Consentry's licensee API: what an AI developer runs to stay in step.

    python examples/licensee_client.py --url https://platform.example --api-key csk_… \
        --dir ./consentry-copy [--json]

One run (`sync`) does, in order:

1. Fetch the platform's published signing keys (`/.well-known/consentry-keys.json`).
2. For every delivery not yet copied: fetch `manifest.json`, check its Ed25519 signature
   (header `Consentry-Signature`), download each part file (resuming a partial download
   with an HTTP Range request), check its SHA-256 against the manifest, and add its rows
   to the local copy `records.parquet` (with a `delivery_id` column).
3. Read the revocation feed from the saved cursor, batch by batch: check each batch's
   signature, keep the batch and its signature under `batches/` as evidence, delete the
   revoked records from the local copy, post a receipt for them, and only then save the
   cursor (the feed is at-least-once, receipts are idempotent: a crash anywhere repeats
   work, never loses it).

Every file is replaced atomically (written beside, then renamed). Needs only httpx, pyarrow
and cryptography; it does not import Consentry.

Exit codes: 0 synced; 1 the sync failed (the server unreachable or answering an error, or
something it sent does not check out); 2 the API key was refused (401) or lacks permission
(403), or no key was given. Every failure is one sentence on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["AccessRefused", "LicenseeClient", "SyncError", "SyncReport", "main"]

CHUNK = 1 << 20
RECEIPT_BATCH = 5_000


EXIT_FAILED = 1
EXIT_REFUSED = 2


class SyncError(Exception):
    """The server sent something that does not check out (nothing local was changed)."""


class AccessRefused(Exception):  # noqa: N818 - the server's answer, not a bug of ours
    """The server refused the API key (401) or what it may do (403)."""


def _problem_detail(response: httpx.Response) -> str:
    """What an RFC 9457 problem body says: its errors' messages (without the location the
    `detail` starts with: `header: Authorization: …`), else its `detail`; "" when the body
    is not a problem."""
    try:
        body = json.loads(response.read())
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    errors = body.get("errors")
    messages = [
        e["message"].strip()
        for e in (errors if isinstance(errors, list) else [])
        if isinstance(e, dict) and isinstance(e.get("message"), str)
    ]
    if messages:
        return "; ".join(messages)
    detail = body.get("detail")
    return detail.strip() if isinstance(detail, str) else ""


def _checked(response: httpx.Response) -> httpx.Response:
    """`response` when it succeeded; else the refusal or error in one sentence.

    1. 401: the API key was refused (absent, mistyped, replaced, or its licensee disabled).
    2. 403: the key was accepted but may not do this.
    3. Any other error status: a `SyncError` naming the request and the server's detail.
    """
    if response.is_success:
        return response
    request = response.request
    what = f"{request.method} {request.url.path}"
    detail = _problem_detail(response)
    said = f" The server said: {detail.rstrip('.')}." if detail else ""
    if response.status_code == 401:
        raise AccessRefused(
            f"The server refused the API key (401 Unauthorized on {what}).{said} Check that "
            "--api-key or CONSENTRY_API_KEY holds the whole key the platform gave you (it "
            "starts with csk_); if your licence was disabled or the key replaced, ask the "
            "platform for a new one."
        )
    if response.status_code == 403:
        raise AccessRefused(
            f"The API key was accepted but lacks permission for {what} (403 Forbidden).{said} "
            "Ask the platform to check what your licence allows."
        )
    phrase = response.reason_phrase or "error"
    raise SyncError(f"the server answered {response.status_code} {phrase} to {what}.{said}")


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class SyncReport:
    """What one sync did."""

    deliveries_copied: list[str] = field(default_factory=list)
    records: int = 0
    revocations_seen: int = 0
    records_deleted: int = 0
    receipts: dict[str, int] = field(
        default_factory=lambda: {"confirmed": 0, "already_confirmed": 0, "unknown": 0}
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "deliveries_copied": self.deliveries_copied,
            "records": self.records,
            "revocations_seen": self.revocations_seen,
            "records_deleted": self.records_deleted,
            "receipts": self.receipts,
        }


class LicenseeClient:
    """Keeps a local Parquet copy of a licensee's deliveries in step with revocations."""

    def __init__(self, url: str, api_key: str, directory: Path, *, timeout: float = 60) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "downloads").mkdir(exist_ok=True)
        (self.directory / "batches").mkdir(exist_ok=True)
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
        )
        self._keys: dict[str, Ed25519PublicKey] = {}

    # -- local state -------------------------------------------------------------------------

    @property
    def copy_path(self) -> Path:
        return self.directory / "records.parquet"

    def _state(self) -> dict[str, Any]:
        path = self.directory / "state.json"
        if not path.exists():
            return {"cursor": "", "deliveries": []}
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        _atomic_write(self.directory / "state.json", json.dumps(state, indent=2).encode())

    def records(self) -> pa.Table | None:
        """The local copy (every delivered row still held), or None before the first sync."""
        return pq.read_table(self.copy_path) if self.copy_path.exists() else None

    def _write_copy(self, table: pa.Table) -> None:
        tmp = self.copy_path.with_name(".records.parquet.tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, self.copy_path)

    # -- signatures --------------------------------------------------------------------------

    def _load_keys(self) -> None:
        response = _checked(self.http.get("/.well-known/consentry-keys.json"))
        for jwk in response.json()["keys"]:
            if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
                self._keys[jwk["kid"]] = Ed25519PublicKey.from_public_bytes(_b64url(jwk["x"]))

    def _check(self, body: bytes, response: httpx.Response, what: str) -> None:
        kid = response.headers.get("Consentry-Key-Id", "")
        signature = response.headers.get("Consentry-Signature", "")
        key = self._keys.get(kid)
        if key is None:
            raise SyncError(f"{what}: signed with unknown key {kid!r}")
        try:
            key.verify(_b64url(signature), body)
        except (InvalidSignature, ValueError):
            raise SyncError(f"{what}: the signature does not verify") from None

    # -- deliveries --------------------------------------------------------------------------

    def _download(self, url: str, target: Path, sha256: str) -> None:
        """Download `url` to `target`, resuming a partial file with a Range request."""
        partial = target.with_name(target.name + ".partial")
        have = partial.stat().st_size if partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self.http.stream("GET", url, headers=headers) as response:
            if response.status_code == 416:  # the partial file is already complete
                pass
            elif response.status_code == 206:
                with partial.open("ab") as out:
                    for block in response.iter_bytes(CHUNK):
                        out.write(block)
            else:
                _checked(response)
                with partial.open("wb") as out:
                    for block in response.iter_bytes(CHUNK):
                        out.write(block)
        with partial.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest != sha256:
            partial.unlink()
            raise SyncError(f"{url}: sha256 {digest} does not match the manifest's {sha256}")
        os.replace(partial, target)

    def _copy_delivery(self, summary: dict[str, Any]) -> int:
        delivery_id = summary["delivery_id"]
        response = _checked(self.http.get(summary["manifest_url"]))
        self._check(response.content, response, f"manifest of {delivery_id}")
        manifest = json.loads(response.content)
        folder = self.directory / "downloads" / delivery_id
        folder.mkdir(exist_ok=True)
        _atomic_write(folder / "manifest.json", response.content)
        _atomic_write(folder / "manifest.sig", _b64url(response.headers["Consentry-Signature"]))
        tables = []
        for entry in manifest["files"]:
            target = folder / entry["name"]
            if not target.exists():
                self._download(
                    f"/v1/licensee/deliveries/{delivery_id}/files/{entry['name']}",
                    target,
                    entry["sha256"],
                )
            part = pq.read_table(target)
            if part.num_rows != entry["rows"]:
                raise SyncError(
                    f"{entry['name']}: {part.num_rows} rows, manifest says {entry['rows']}"
                )
            tables.append(part)
        rows = pa.concat_tables(tables) if tables else None
        if rows is None or rows.num_rows == 0:
            return 0
        rows = rows.append_column("delivery_id", pa.repeat(delivery_id, rows.num_rows))
        existing = self.records()
        self._write_copy(rows if existing is None else pa.concat_tables([existing, rows]))
        return int(rows.num_rows)

    # -- revocations -------------------------------------------------------------------------

    def _apply(self, record_ids: list[str]) -> int:
        """Delete the records from the local copy; returns how many rows went."""
        existing = self.records()
        if existing is None or not record_ids:
            return 0
        gone = pc.is_in(existing.column("record_id"), pa.array(record_ids, pa.string()))
        kept = existing.filter(pc.invert(gone))
        deleted = int(existing.num_rows - kept.num_rows)
        if deleted:
            self._write_copy(kept)
        return deleted

    def _receipt(self, record_ids: list[str], report: SyncReport) -> None:
        for start in range(0, len(record_ids), RECEIPT_BATCH):
            response = _checked(
                self.http.post(
                    "/v1/licensee/revocations/receipts",
                    json={"record_ids": record_ids[start : start + RECEIPT_BATCH]},
                )
            )
            result = response.json()
            for key in report.receipts:
                report.receipts[key] += len(result[key])

    def sync(self, *, limit: int = 500) -> SyncReport:
        """Copy new deliveries, then apply and confirm new revocations (see module doc)."""
        report = SyncReport()
        state = self._state()
        self._load_keys()
        listing = _checked(self.http.get("/v1/licensee/deliveries"))
        for summary in reversed(listing.json()["deliveries"]):  # oldest first
            if summary["delivery_id"] in state["deliveries"]:
                continue
            self._copy_delivery(summary)
            state["deliveries"].append(summary["delivery_id"])
            self._save_state(state)
            report.deliveries_copied.append(summary["delivery_id"])
        while True:
            response = _checked(
                self.http.get(
                    "/v1/licensee/revocations", params={"cursor": state["cursor"], "limit": limit}
                )
            )
            self._check(response.content, response, "revocation batch")
            batch = json.loads(response.content)
            ids = [r["record_id"] for r in batch["revocations"]]
            if ids:
                name = hashlib.sha256(response.content).hexdigest()[:16]
                _atomic_write(self.directory / "batches" / f"{name}.json", response.content)
                _atomic_write(
                    self.directory / "batches" / f"{name}.sig",
                    _b64url(response.headers["Consentry-Signature"]),
                )
                report.revocations_seen += len(ids)
                report.records_deleted += self._apply(ids)
                self._receipt(list(dict.fromkeys(ids)), report)
            state["cursor"] = batch["next_cursor"]
            self._save_state(state)
            if not batch["has_more"]:
                break
        copy = self.records()
        report.records = 0 if copy is None else copy.num_rows
        return report

    def close(self) -> None:
        self.http.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sync a licensee's deliveries and revocations.")
    parser.add_argument("--url", required=True, help="The platform's Consentry API base URL.")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("CONSENTRY_API_KEY"),
        help="The licensee API key (default: $CONSENTRY_API_KEY).",
    )
    parser.add_argument("--dir", required=True, type=Path, help="Where the local copy lives.")
    parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("give --api-key or set CONSENTRY_API_KEY")
    client = LicenseeClient(args.url, args.api_key, args.dir)
    try:
        report = client.sync()
    except AccessRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except SyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except httpx.HTTPError as exc:
        # Unreachable, timed out, cut off: the transport's own words, after ours.
        print(f"error: could not talk to {args.url}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(
            f"copied {len(report.deliveries_copied)} deliveries; {report.records} records held; "
            f"{report.revocations_seen} revocations seen, {report.records_deleted} rows deleted; "
            f"receipts: {report.receipts}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
