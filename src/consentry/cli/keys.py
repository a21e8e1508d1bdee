"""CLI commands: `consentry keys list` and `consentry keys rotate` (docs/keys.md)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from consentry.cli.common import console, exits_cleanly, plural, print_json, settings_from
from consentry.delivery.keyset import ROTATABLE_KINDS, KeyEntry, KeySet

__all__ = ["KeyKind", "keys_app", "register"]

keys_app = typer.Typer(
    help="Signing keys: one per payload kind, with their history (the published JWKS).",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


class KeyKind(StrEnum):
    """`keys rotate --kind`: the rotatable payload kinds (`ROTATABLE_KINDS`, which a test
    holds this to), so --help lists them."""

    manifest = "manifest"
    feed = "feed"
    attestation = "attestation"
    http = "http"


def _public(entry: KeyEntry) -> dict[str, object]:
    return {k: v for k, v in entry.as_json().items() if k != "file"}


def _print(entries: list[KeyEntry]) -> None:
    for e in entries:
        state = f"retired {e.retired}" if e.retired else "signs " + ", ".join(e.current_for)
        console.print(
            f"{e.kid}  created {e.created}  payloads {', '.join(e.payloads)}  {state}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )


@keys_app.command("list")
@exits_cleanly
def keys_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every signing key, oldest first: the kinds it signs or signed, and whether it retired."""
    entries = KeySet.for_home(settings_from(ctx).home).entries()
    if as_json:
        print_json({"keys": [_public(e) for e in entries]})
    else:
        _print(entries)


@keys_app.command("rotate")
@exits_cleanly
def keys_rotate(
    ctx: typer.Context,
    kinds: Annotated[
        list[KeyKind] | None,
        typer.Option(
            "--kind",
            help="A payload kind to rotate; repeat for several.",
            show_default="all of them",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Make a new signing key for each kind; the old keys stay published and verifiable."""
    keyset = KeySet.for_home(settings_from(ctx).home)
    created = keyset.rotate([k.value for k in kinds] if kinds else ROTATABLE_KINDS)
    if as_json:
        print_json({"created": [_public(e) for e in created]})
    else:
        console.print(f"{plural(len(created), 'new key')}", highlight=False)
        _print(created)


def register(app: typer.Typer) -> None:
    """Add the `keys` group to the root command."""
    app.add_typer(keys_app, name="keys")
