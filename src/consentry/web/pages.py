"""Server-rendered pages: demo sign-in, the privacy settings page, policy changes.

Pages work without JavaScript: every switch is a form POST carrying a CSRF token bound to
the signed session cookie, from a page of this site (`same_origin`). Who is signed in is kept
server-side (`consentry.web.sessions`). A signed-in request carrying `Sec-GPC: 1` is recorded
as a GPC choice before the page is drawn. Errors on these routes are pages too (`error.html`, with
the right status code), so a browser never shows a bare JSON body.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from consentry import __version__
from consentry.ledger.rules import ConsentDecision, ConsentRule, minor_birth_cutoff
from consentry.ledger.service import Evidence
from consentry.policy import REGION_GROUPS, Choice, PolicyVersion, diff_versions, region_name
from consentry.serving.services import Services, services
from consentry.store.models import ConsentStateRow, RevocationRow, Subject
from consentry.web import STATIC_DIR, templates
from consentry.web.sessions import end_sessions, open_session, signed_in

__all__ = [
    "csrf_ok",
    "csrf_token",
    "describe_decision",
    "error_page",
    "router",
    "same_origin",
]

router = APIRouter(include_in_schema=False)
ServicesDep = Annotated[Services, Depends(services)]
# Form fields default to "" so that a missing field gets the same explained page as a wrong
# one (403 for the CSRF token, 422 for a choice) instead of a bare validation error.
SESSION_CSRF = "csrf"
SESSION_NOTICE = "notice"


def _date(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%-d %B %Y") if at else ""


def _where(region: str | None) -> str:
    """'the EU', 'the EEA', 'the UK', else the country's name."""
    if region is None:
        return "your region"
    for group in ("EU", "EEA", "UK"):
        if region.upper() in REGION_GROUPS[group]:
            return {"EU": "the EU", "EEA": "the EEA", "UK": "the UK"}[group]
    return region_name(region.upper())


def describe_decision(
    decision: ConsentDecision,
    region: str | None,
    version: PolicyVersion | None,
    *,
    default_since: str | None = None,
) -> tuple[str, str]:
    """The state in one word and the reason in words a person understands.

    1. Minors and unknown ages: off, and why it cannot be switched on.
    2. An explicit choice: on/off since the date the user chose.
    3. GPC: off because the browser's Global Privacy Control signal asked.
    4. A regional or general default: what the default is, where, since which policy:
       `default_since` (the first version of the run in which this default has held,
       `PolicyFile.default_since`), else the version that decided.
    """
    on = decision.decision is Choice.ALLOW
    state = "On" if on else "Off"
    since = _date(decision.since)
    policy = default_since or decision.policy_version or "?"
    age = version.age_of_majority if version else 18
    match decision.rule:
        case ConsentRule.MINOR:
            return state, f"Off: this is never used for people under {age}."
        case ConsentRule.UNKNOWN_AGE:
            return state, "Off: we do not know your age, so this stays off."
        case ConsentRule.EXPLICIT:
            verb = "switched it on" if on else "switched it off"
            return state, f"{state}: you {verb} on {since}."
        case ConsentRule.GPC:
            return state, (
                f"Off: your browser's Global Privacy Control signal asked us not to share "
                f"(recorded {since})."
            )
        case ConsentRule.REGION_DEFAULT:
            if on:
                return state, (
                    f"On by default in {_where(region)} since policy {policy} — switch it off here."
                )
            return state, f"Off: you are in {_where(region)} and have not opted in."
        case ConsentRule.DEFAULT:
            if on:
                return state, f"On by default since policy {policy} — switch it off here."
            return state, f"Off by default since policy {policy} — switch it on here if you agree."
        case _:
            return state, "Off: the policy in force does not include this."


def csrf_token(request: Request) -> str:
    token = request.session.get(SESSION_CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[SESSION_CSRF] = token
    return token


def same_origin(request: Request) -> bool:
    """The request comes from a page of this site.

    1. `Origin`, when sent, must name this host (`Host`); `null` never does.
    2. Else `Referer`, when sent, must be a page of this host.
    3. Neither sent (a client that sends no browser headers): the form token decides alone.
    Hosts are compared without the scheme, so a TLS-terminating proxy in front changes
    nothing.
    """
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None:
        return origin != "null" and urlsplit(origin).netloc == host
    referer = request.headers.get("referer")
    if referer is not None:
        return urlsplit(referer).netloc == host
    return True


def csrf_ok(request: Request, token: str) -> bool:
    """The form comes from a page of this site (`same_origin`) and carries the token bound
    to this session (compared in constant time)."""
    expected = request.session.get(SESSION_CSRF)
    return (
        isinstance(expected, str) and hmac.compare_digest(expected, token) and same_origin(request)
    )


# Every page can draw a form (the admin menu's sign-out) with this session's token.
templates.env.globals["csrf_token"] = csrf_token


def error_page(
    request: Request,
    code: int,
    title: str,
    message: str,
    *,
    link: tuple[str, str] = ("/settings/privacy", "Back to your privacy settings"),
) -> Response:
    """An error as a page with status `code`: what went wrong and where to go next."""
    return templates.TemplateResponse(
        request,
        "error.html",
        {
            "version": __version__,
            "title": title,
            "message": message,
            "link_href": link[0],
            "link_text": link[1],
        },
        status_code=code,
    )


def _expired(request: Request) -> Response:
    return error_page(
        request,
        status.HTTP_403_FORBIDDEN,
        "This form has expired",
        "For your safety we did not change anything. Reload the page and try again.",
    )


def _showcase(svc: Services, now: datetime) -> list[tuple[str, sa.Select[str]]]:
    """One query per state the demo must let a visitor see (label, query of user ids).

    Each picks among live accounts (not deleted, not deactivated); all but the minor are
    adults, so that what the page shows is the state named, not the age rule.
    """
    version = svc.policy.version_at(now)
    cutoff = minor_birth_cutoff(now, version.age_of_majority if version else 18)
    live = sa.and_(Subject.deleted_at.is_(None), Subject.deactivated_at.is_(None))
    adult = sa.and_(Subject.birth_date.is_not(None), Subject.birth_date <= cutoff)
    user = sa.select(Subject.user_id).distinct()
    state = ConsentStateRow.user_id == Subject.user_id
    return [
        ("a minor", user.where(live, Subject.birth_date > cutoff)),
        (
            "Global Privacy Control",
            user.join(ConsentStateRow, state).where(live, adult, ConsentStateRow.source == "gpc"),
        ),
        (
            "posts delivered, then revoked, deletion confirmed",
            user.join(RevocationRow, RevocationRow.author_id == Subject.user_id).where(
                live, RevocationRow.confirmed_at.is_not(None)
            ),
        ),
        ("protected account", user.where(live, adult, Subject.protected.is_(True))),
        (
            "opted in",
            user.join(ConsentStateRow, state).where(
                live,
                adult,
                Subject.region.in_(sorted(REGION_GROUPS["EU"])),
                ConsentStateRow.choice == Choice.ALLOW.value,
                ConsentStateRow.source != "gpc",
            ),
        ),
    ]


def _demo_users(svc: Services, limit: int = 12) -> list[dict[str, Any]]:
    """The demo sign-in list (demo homes only).

    1. First one person in each state worth seeing (`_showcase`): a minor, a Global
       Privacy Control user, a user whose delivered posts were revoked and whose deletion
       the licensee confirmed, a protected account, an EU user who opted in; a state no
       account is in is left out.
    2. Then a spread of regions, one account per region, up to `limit` in all.
    """
    demo = svc.settings.home / "demo" / "demo.json"
    if not demo.exists():
        return []
    now = datetime.now(UTC)
    picked: dict[str, dict[str, Any]] = {}
    with svc.store.session() as session:

        def add(user_id: str, region: str | None, birth: Any, label: str | None) -> None:
            picked[user_id] = {
                "user_id": user_id,
                "region": region,
                "where": _where(region),
                "birth_date": birth,
                "label": label,
            }

        for label, query in _showcase(svc, now):
            chosen = session.scalars(
                query.where(Subject.user_id.not_in(list(picked) or [""]))
                .order_by(Subject.user_id)
                .limit(1)
            ).first()
            if chosen is not None:
                subject = session.get(Subject, chosen)
                assert subject is not None
                add(chosen, subject.region, subject.birth_date, label)
        rows = session.execute(
            sa.select(Subject.user_id, Subject.region, Subject.birth_date)
            .where(Subject.deleted_at.is_(None))
            .order_by(Subject.user_id)
            .limit(400)
        ).all()
    seen_regions: set[str | None] = set()
    for user_id, region, birth in rows:
        if len(picked) >= limit:
            break
        if region in seen_regions or user_id in picked:
            continue
        seen_regions.add(region)
        add(user_id, region, birth, None)
    return list(picked.values())


@router.get("/favicon.ico")
def favicon() -> Response:
    """The site's icon where browsers look for it unasked: a document that names no icon of
    its own (an evidence pack's report) gets it instead of a 404 in the browser's console."""
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


@router.get("/signin", response_class=HTMLResponse)
def signin_page(request: Request, svc: ServicesDep) -> Response:
    return templates.TemplateResponse(
        request,
        "signin.html",
        {
            "version": __version__,
            "users": _demo_users(svc),
            "csrf": csrf_token(request),
            "user": signed_in(request, "user"),
        },
    )


@router.post("/signin")
def signin(
    request: Request,
    svc: ServicesDep,
    user_id: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Demo sign-in: only for homes holding the generated demo platform."""
    back = ("/signin", "Back to sign-in")
    if not csrf_ok(request, csrf):
        return error_page(
            request,
            status.HTTP_403_FORBIDDEN,
            "This form has expired",
            "Nothing happened. Reload the sign-in page and try again.",
            link=back,
        )
    if not (svc.settings.home / "demo" / "demo.json").exists():
        return error_page(
            request,
            status.HTTP_404_NOT_FOUND,
            "Demo sign-in is not available",
            "Demo sign-in is only for homes that hold the generated demo platform.",
            link=back,
        )
    if svc.ledger.subject(user_id) is None:
        return error_page(
            request, status.HTTP_404_NOT_FOUND, "No such user", f"There is no user {user_id!r}.",
            link=back,
        )  # fmt: skip
    # A new session (and form token) for the signed-in browser: nothing carries over.
    end_sessions(request)
    open_session(request, user_id, "user")
    return RedirectResponse("/settings/privacy", status.HTTP_303_SEE_OTHER)


@router.post("/signout")
def signout(
    request: Request, csrf: Annotated[str, Form()] = "", then: Annotated[str, Form()] = ""
) -> Response:
    """End this browser's sessions server-side (user and admin) and clear its cookie; a
    copy of the cookie signs no one in afterwards. `then=admin` returns to admin sign-in."""
    if not csrf_ok(request, csrf):
        return _expired(request)
    end_sessions(request)
    back = "/admin/signin" if then == "admin" else "/signin"
    return RedirectResponse(back, status.HTTP_303_SEE_OTHER)


@router.get("/settings/privacy", response_class=HTMLResponse)
def privacy_settings(request: Request, svc: ServicesDep) -> Response:
    """Every purpose in plain words, its state and why, one switch each, and the history."""
    user_id = signed_in(request, "user")
    if user_id is None:
        return RedirectResponse("/signin", status.HTTP_303_SEE_OTHER)
    gpc_recorded: list[str] = []
    if request.headers.get("sec-gpc", "").strip() == "1":
        recorded = svc.ledger.record_gpc(
            user_id,
            evidence=Evidence(origin="GET /settings/privacy", client="browser"),
        )
        gpc_recorded = [e.purpose for e in recorded]
    now = datetime.now(UTC)
    version = svc.policy.version_at(now)
    subject = svc.ledger.subject(user_id)
    region = subject.region if subject else None
    decisions = svc.ledger.resolve_all(user_id, now)
    purposes = []
    for d in decisions:
        purpose = version.purpose(d.purpose) if version else None
        first = svc.policy.default_since(d.purpose, region, now)
        state, reason = describe_decision(
            d, region, version, default_since=first.version if first else None
        )
        locked = d.rule in (ConsentRule.MINOR, ConsentRule.UNKNOWN_AGE)
        purposes.append(
            {
                "key": d.purpose,
                "title": purpose.title if purpose else d.purpose,
                "description": purpose.description if purpose else "",
                "on": d.decision is Choice.ALLOW,
                "state": state,
                "reason": reason,
                "locked": locked,
                "rule": d.rule.value,
            }
        )
    titles = {p.key: p.title for v in svc.policy.versions for p in v.purposes}
    history = [
        {
            "when": e.at.strftime("%Y-%m-%d %H:%M UTC"),
            "purpose": titles.get(e.purpose, e.purpose),
            "choice": "On" if e.choice is Choice.ALLOW else "Off",
            "source": {
                "settings": "this page",
                "gpc": "Global Privacy Control",
                "api": "an app",
                "import": "imported history",
                "support": "support team",
            }.get(e.source, e.source),
            "policy_version": e.policy_version,
        }
        for e in reversed(svc.ledger.history(user_id))
    ]
    index = next((i for i, v in enumerate(svc.policy.versions) if v is version), None)
    previous = svc.policy.versions[index - 1] if index else None
    notice = request.session.pop(SESSION_NOTICE, None)
    return templates.TemplateResponse(
        request,
        "privacy.html",
        {
            "version": __version__,
            "user": user_id,
            "where": _where(region),
            "policy": version,
            "previous": previous,
            "purposes": purposes,
            "history": history,
            "gpc_signal": request.headers.get("sec-gpc", "").strip() == "1",
            "gpc_recorded": [titles.get(p, p) for p in gpc_recorded],
            "csrf": csrf_token(request),
            "notice": notice if isinstance(notice, str) else None,
        },
    )


@router.post("/settings/privacy/{purpose}")
def change_privacy_setting(
    purpose: str,
    request: Request,
    svc: ServicesDep,
    choice: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """One switch: records the choice now and shows the page again.

    1. Signed in, with this session's CSRF token (else 401 / 403), `choice` allow or deny
       (else 422), a purpose of the policy in force (else 404); nothing is recorded on error.
    2. The choice is a `settings` event, effective now, with the version the user was shown.
    3. Back to the page (303), with a status notice saying what changed.
    """
    user_id = signed_in(request, "user")
    if user_id is None:
        return error_page(
            request,
            status.HTTP_401_UNAUTHORIZED,
            "Please sign in",
            "Sign in to change your privacy settings. Nothing was changed.",
            link=("/signin", "Sign in"),
        )
    if not csrf_ok(request, csrf):
        return _expired(request)
    if choice not in ("allow", "deny"):
        return error_page(
            request,
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "That choice is not possible",
            f"A setting can be switched on (allow) or off (deny), not {choice!r}. "
            "Nothing was changed.",
        )
    version = svc.policy.version_at(datetime.now(UTC))
    described = version.purpose(purpose) if version else None
    if version is None or described is None:
        return error_page(
            request,
            status.HTTP_404_NOT_FOUND,
            "No such setting",
            f"The policy in force has no setting {purpose!r}. Nothing was changed.",
        )
    svc.ledger.record(
        user_id,
        purpose,
        Choice(choice),
        source="settings",
        evidence=Evidence(
            origin="POST /settings/privacy", client="browser", shown_version=version.version
        ),
    )
    state = "on" if choice == "allow" else "off"
    request.session[SESSION_NOTICE] = f"Saved: {described.title} is now {state}, from now on."
    return RedirectResponse(f"/settings/privacy#purpose-{purpose}", status.HTTP_303_SEE_OTHER)


@router.get("/policy/changes/{old}/{new}", response_class=HTMLResponse)
def policy_changes(old: str, new: str, request: Request, svc: ServicesDep) -> Response:
    """What changed between two policy versions, in plain words."""
    try:
        before, after = svc.policy.get(old), svc.policy.get(new)
    except KeyError:
        return error_page(
            request,
            status.HTTP_404_NOT_FOUND,
            "No such policy version",
            f"There is no comparison between policy versions {old!r} and {new!r}.",
        )
    changes = diff_versions(before, after)
    return templates.TemplateResponse(
        request,
        "policy_changes.html",
        {"version": __version__, "old": before, "new": after, "changes": changes},
    )
