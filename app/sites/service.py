"""Site rules: who registers and sees which site, registration checks, and the views of collected data."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from web3 import Web3
from web3.contract import Contract

from app.audit import service as audit
from app.context import Context
from app.core.config import Settings, get_settings
from app.core.errors import BadRequest, Conflict, Forbidden, NotFound, TooManyRequests
from app.core.security import utcnow
from app.sites.errors import SiteNotAllowed
from app.sites.repository import UNANSWERED
from app.sites.schemas import SiteCreate, SitePublic, SupplyPublic
from app.users.models import LoginThrottle, Role, User, UserStatus
from common import clock
from contracts.artifacts import load_artifact
from ess_collector.config import CollectorConfig
from ess_collector.forecast import outlook_from_estimate, sell_cap
from ess_collector.models import Site, SiteEvent, SiteFault, SiteStatus
from ess_collector.netpolicy import SiteHostRefused, resolve_allowed
from ess_collector.reader import read_site
from ess_collector.supply import SupplyConfig, SupplyEstimate, estimate_run, site_battery
from ess_collector.supply import estimate_supply as _estimate_supply


class TooManySiteRegistrations(TooManyRequests):
    def __init__(self, per_hour: int, retry_after_s: int) -> None:
        super().__init__(
            f"at most {per_hour} site registrations an hour; try again in {retry_after_s} s",
            retry_after=retry_after_s,
        )


def collector_config(settings: Settings) -> CollectorConfig:
    return CollectorConfig(
        slot_minutes=settings.slot_minutes,
        poll_interval_s=settings.poll_interval_seconds,
        timeout_s=settings.collector_timeout_seconds,
        max_backoff_s=settings.collector_max_backoff_seconds,
        comm_lost_polls=settings.collector_comm_lost_polls,
        stale_polls=settings.collector_stale_polls,
        max_gap_s=settings.collector_max_gap_seconds,
        complete_ratio=settings.collector_complete_ratio,
        anchor_grace_s=settings.anchor_grace_seconds,
        site_max_grid_w=settings.site_max_grid_w,
        clock_speed=settings.clock_speed,
        site_networks=settings.site_network_list,
    )


def supply_config(settings: Settings) -> SupplyConfig:
    return SupplyConfig(
        slot_minutes=settings.slot_minutes,
        utc_offset_h=settings.site_utc_offset_hours,
        battery_power_pct=settings.site_battery_power_pct,
    )


def meter_ledger(ctx: Context) -> Contract | None:
    """The MeterLedger handle, or None when this deployment has none."""
    found = ctx.contracts.get("MeterLedger") if hasattr(ctx, "contracts") else None
    if found is not None:
        return found
    address = ctx.deployment.contracts.get("MeterLedger")
    if address is None:
        return None
    return ctx.w3.eth.contract(
        address=Web3.to_checksum_address(address), abi=load_artifact("MeterLedger").abi
    )


# -- registration and access ------------------------------------------------------------------------


def probe(address: str, port: int, device_id: int, timeout: float) -> bool:
    """One read of the site: True if it answered with our SunSpec map within ``timeout``.

    A failure is only ever False, and returns exactly at the deadline whatever its cause (port closed,
    address filtered, something else listening): neither its text nor its timing tells a port scanner
    anything. Call it with an address already checked against the site networks."""

    async def once() -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                await read_site(address, port, device_id, timeout=timeout)
            return True
        except Exception:  # any cause reads the same
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            return False

    return asyncio.run(once())


REGISTRATION_WINDOW = timedelta(hours=1)


def count_registration(engine: Engine, user_id: int, per_hour: int) -> None:
    """Count one site registration attempt of this user; TooManySiteRegistrations once an hour's are spent.

    The count lives in `login_throttle` under the key ``site-register:<user id>`` (failures = attempts in
    the window that started at window_start) and is committed in a transaction of its own, so refused
    attempts count too. Each step is one conditional UPDATE, atomic under parallel requests."""
    key = f"site-register:{user_id}"
    T = LoginThrottle
    for _ in range(5):
        now = utcnow()
        with Session(engine) as session:
            counted = session.execute(
                update(T)
                .where(
                    col(T.key) == key,
                    col(T.failures) < per_hour,
                    col(T.window_start) > now - REGISTRATION_WINDOW,
                )
                .values(failures=col(T.failures) + 1)
            )
            if counted.rowcount == 0:  # type: ignore[attr-defined]
                counted = session.execute(  # the window is over: a new one starts with this attempt
                    update(T)
                    .where(col(T.key) == key, col(T.window_start) <= now - REGISTRATION_WINDOW)
                    .values(failures=1, window_start=now)
                )
            if counted.rowcount == 1:  # type: ignore[attr-defined]
                session.commit()
                return
            row = session.get(T, key)
            if row is None:
                session.add(T(key=key, failures=1, window_start=now))
                try:
                    session.commit()
                    return
                except IntegrityError:  # a parallel first attempt made the row: count again
                    session.rollback()
                    continue
            if row.failures >= per_hour and row.window_start > now - REGISTRATION_WINDOW:
                wait = row.window_start + REGISTRATION_WINDOW - now
                raise TooManySiteRegistrations(per_hour, max(1, int(wait.total_seconds()) + 1))
    raise TooManySiteRegistrations(per_hour, 1)  # the row kept changing under us: refuse, retry soon


def check_host(host: str, port: int, settings: Settings) -> str:
    """The address to probe, if every address ``host`` resolves to lies in the site networks."""
    try:
        return resolve_allowed(host, port, settings.site_network_list)[0]
    except SiteHostRefused as exc:
        raise SiteNotAllowed(str(exc)) from None


def register_site(session: Session, settings: Settings, user: User, data: SiteCreate) -> Site:
    if user.role == Role.consumer:
        raise Forbidden("consumers have no sites; register as a prosumer")
    if user.role != Role.admin and user.status != UserStatus.approved:
        raise Forbidden("a prosumer registers sites once an admin has approved the account")
    owner_id = data.owner_id if data.owner_id is not None else user.id
    if owner_id != user.id:
        if user.role != Role.admin:
            raise Forbidden("only an admin may register a site for another user")
        if session.get(User, owner_id) is None:
            raise NotFound(f"no user with id {owner_id}")
    if user.role != Role.admin:  # every attempt that reaches the network counts, refused ones too
        count_registration(session.get_bind(), user.id or 0, settings.site_registrations_per_hour)  # type: ignore[arg-type]
    address = check_host(data.host, data.port, settings)
    _ensure_endpoint_free(session, data)
    # Probe before writing, so no database lock is held while waiting on the network. A site that does
    # not answer is accepted (it may be installed later) and shows as offline with a fault.
    answered = probe(address, data.port, data.device_id, settings.site_probe_timeout_seconds)
    now = utcnow()
    site = Site(**data.model_dump(exclude={"owner_id"}), owner_id=owner_id or 0, created_at=now)
    site.status = SiteStatus.online if answered else SiteStatus.offline
    site.last_seen_at = now if answered else None
    session.add(site)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(
            f"a site at {data.host}:{data.port} device {data.device_id} is already registered"
        ) from None
    if not answered:
        session.add(
            SiteFault(
                site_id=site.id or 0, kind="comm_lost", detail=f"{UNANSWERED} when registered", opened_at=now
            )
        )
    session.add(
        SiteEvent(site_id=site.id or 0, ts=now, kind="registered", detail=json.dumps({"by": user.id}))
    )
    audit.record(
        session,
        user,
        "site.register",
        target=f"site:{site.id}",
        details={"host": site.host, "port": site.port, "owner": owner_id},
    )
    return site


def _ensure_endpoint_free(session: Session, data: SiteCreate) -> None:
    taken = session.exec(
        select(Site.id).where(
            col(Site.host) == data.host, col(Site.port) == data.port, col(Site.device_id) == data.device_id
        )
    ).first()
    if taken is not None:
        raise Conflict(
            f"a site at {data.host}:{data.port} device {data.device_id} is already registered (site {taken})"
        )


def visible_sites(session: Session, user: User) -> list[Site]:
    query = select(Site).order_by(col(Site.id))
    if user.role != Role.admin:
        query = query.where(col(Site.owner_id) == user.id)
    return list(session.exec(query).all())


def get_site(session: Session, user: User, site_id: int) -> Site:
    """The site, if this user may see it; others' sites are indistinguishable from missing ones."""
    site = session.get(Site, site_id)
    if site is None or (user.role != Role.admin and site.owner_id != user.id):
        raise NotFound(f"no site {site_id}")
    return site


def set_enabled(session: Session, admin: User, site: Site, enabled: bool) -> Site:
    if site.enabled == enabled:
        return site
    now = utcnow()
    site.enabled = enabled
    site.disabled_at = None if enabled else now
    session.add(site)
    kind = "enabled" if enabled else "disabled"
    session.add(SiteEvent(site_id=site.id or 0, ts=now, kind=kind, detail=json.dumps({"by": admin.id})))
    audit.record(session, admin, f"site.{kind}", target=f"site:{site.id}")
    return site


def to_public(site: Site) -> SitePublic:
    data = site.model_dump()
    data["status"] = site.status if site.enabled else "disabled"
    return SitePublic(**data)


# -- slots ------------------------------------------------------------------------------------------


def parse_slot_start(value: str, slot_minutes: int) -> datetime:
    """Unix seconds or ISO 8601 (a naive time is UTC); must be the start of a slot."""
    try:
        t = (
            datetime.fromtimestamp(int(value), UTC)
            if value.lstrip("-").isdigit()
            else datetime.fromisoformat(value)
        )
    except (ValueError, OverflowError, OSError):
        raise BadRequest(f"{value!r} is neither unix seconds nor an ISO 8601 time") from None
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    if not clock.in_range(t):  # the slot arithmetic after this would leave the calendar
        raise BadRequest(f"{value!r} is not between {clock.EARLIEST.year} and {clock.LATEST.year}")
    t = t.astimezone(UTC)
    if t.microsecond or int(t.timestamp()) % (slot_minutes * 60):
        raise BadRequest(f"{t.isoformat()} is not the start of a {slot_minutes}-minute slot")
    return t


def estimate_supply(
    session: Session, site: Site, slot_start: datetime, settings: Settings | None = None
) -> SupplyEstimate:
    """What ``site`` can deliver in the slot at ``slot_start``: the market caps sell orders with this."""
    return _estimate_supply(session, site, slot_start, supply_config(settings or get_settings()))


def sell_room(
    session: Session,
    site: Site,
    slot_start: datetime,
    sold: dict[datetime, int],
    settings: Settings | None = None,
) -> int:
    """How much more ``site`` can sell in the slot at ``slot_start`` given what it already sold
    (``sold``: Wh per slot). The battery is followed from now through every slot up to the last one
    with a sale (``ess_collector.forecast``): what earlier slots sold has left it, what later slots sold
    stays in it, and it moves at most its power limit per slot."""
    cfg = supply_config(settings or get_settings())
    step = timedelta(minutes=cfg.slot_minutes)
    now = clock.now()
    seconds = int(step.total_seconds())
    first = datetime.fromtimestamp(int(now.timestamp()) // seconds * seconds, UTC)
    last = max([slot_start, *sold])
    starts = [first + k * step for k in range((last - first) // step + 1)] if first <= slot_start else []
    if not starts:
        return 0
    estimates = estimate_run(session, site, starts, cfg, now=now)
    battery = site_battery(site, estimates[0], cfg)
    outlooks = [outlook_from_estimate(e, sold.get(e.slot_start, 0)) for e in estimates]
    return sell_cap(battery, outlooks, seconds, slot_start)


def supply_public(estimate: SupplyEstimate) -> SupplyPublic:
    data = estimate.__dict__ | {
        "soc_pct": None if estimate.soc_pct is None else float(Decimal(estimate.soc_pct))
    }
    return SupplyPublic(**data)
