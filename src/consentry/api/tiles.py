"""The audit log over HTTP as a C2SP transparency log: `/checkpoint`, tlog-tiles and the
log's verifier key at a well-known URL (docs/formats.md).

`/checkpoint` and the verifier key are in the OpenAPI schema. The tile routes are left out
of it on purpose: a tile path is several path elements (`/tile/0/x001/234.p/7`), which no
OpenAPI path parameter can describe, and generic tiles clients find them by the spec, not
by the schema.
"""

from __future__ import annotations

import threading
from typing import Annotated, Final

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.responses import PlainTextResponse, Response

from consentry.audit.checkpoint import log_origin, verifier_key
from consentry.audit.log import AuditLog
from consentry.audit.merkle import MemoryTree
from consentry.audit.tiles import TILE_WIDTH, entry_bundle, hash_tile, parse_tile_path
from consentry.serving.services import Services, services
from consentry.signing import Signer

__all__ = ["VKEY_PATH", "router"]

VKEY_PATH: Final = "/.well-known/consentry-audit-vkey"
router = APIRouter(tags=["audit"])
ServicesDep = Annotated[Services, Depends(services)]

_TREES: dict[str, MemoryTree] = {}
_TREES_LOCK = threading.Lock()


def _tree(svc: Services) -> MemoryTree:
    """The log's tree, kept in memory per store and extended with new leaves on each use."""
    url = svc.settings.resolved_database_url
    with _TREES_LOCK:
        tree = _TREES.setdefault(url, MemoryTree())
        return AuditLog(svc.store).load_tree(tree)


@router.get(
    "/checkpoint",
    summary="The log's signed checkpoint (C2SP tlog-checkpoint, as tlog-tiles serves it)",
    response_class=PlainTextResponse,
)
def tlog_checkpoint(svc: ServicesDep) -> PlainTextResponse:
    signed = AuditLog(svc.store).checkpoint(Signer.from_keyring(svc.keyring), record=False)
    return PlainTextResponse(signed.note(), media_type="text/plain; charset=utf-8")


@router.get(
    VKEY_PATH,
    summary="The checkpoint verifier key (C2SP signed-note vkey: name+hash+base64 key)",
    response_class=PlainTextResponse,
)
def vkey(svc: ServicesDep) -> PlainTextResponse:
    signer = Signer.from_keyring(svc.keyring)
    return PlainTextResponse(verifier_key(log_origin(signer), signer.public_key) + "\n")


@router.get("/tile/{level}/{rest:path}", include_in_schema=False)
def tile(level: str, rest: str, svc: ServicesDep) -> Response:
    """One hash tile or entry bundle; 404 for a path that is not a tile or a tile the log
    does not have yet. Full tiles never change (cached as immutable)."""
    path = parse_tile_path(level, rest)
    missing = HTTPException(status.HTTP_404_NOT_FOUND, f"no tile {level}/{rest}")
    if path is None:
        raise missing
    tree = _tree(svc)
    if path.level is None:
        start = path.index * TILE_WIDTH
        if start + path.width > tree.size:
            raise missing
        with svc.store.session() as session:
            leaves = AuditLog(svc.store).leaves(session, start=start, stop=start + path.width)
        data = entry_bundle([leaf.entry.encode("utf-8") for leaf in leaves])
    else:
        found = hash_tile(tree, tree.size, path.level, path.index, path.width)
        if found is None:
            raise missing
        data = found
    headers = {"Cache-Control": "public, max-age=31536000, immutable"}
    if path.width < TILE_WIDTH:
        headers = {"Cache-Control": "no-cache"}
    return Response(data, media_type="application/octet-stream", headers=headers)
