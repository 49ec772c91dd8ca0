"""Who may see and change what through the control API.

The rule: an admin key manages its own organization. It sees that organization's instances (and their
action logs), usage and API keys, and can create keys and offerings only for it. Instances with no
organization (created by the scheduler or by hand) and action logs with no instance belong to the
operator and are visible to every admin key. The shared catalog (providers, zones, instance types,
models, every offering) is readable by any admin key, and models, being shared, are writable by any
admin key: admin scope is meant for the operator's people, inference scope for tenants. The one
cross-organization power is over organizations themselves: admin keys of a platform organization create,
list and change every organization, its limits and quotas (gateway/control/organizations.py).
"""

from __future__ import annotations

from aiohttp import web

from gateway import state
from gateway.auth import Principal, require_admin
from gateway.error_codes import ErrorCode
from gateway.errors import ApiError

# Where a request signed in with the console's session cookie (and no key) carries its principal
# (gateway/console/auth.py sets it): a signed-in user is their organization's admin, under these same rules.
SESSION_PRINCIPAL = web.RequestKey("session_principal", Principal)


def admin(request: web.Request) -> Principal:
    """The admin principal of the request: 401 without a valid key, 403 for inference-only keys."""
    session = request.get(SESSION_PRINCIPAL)
    if session is not None:
        return session
    return require_admin(request.app[state.KEYS], request)


def own_organization(principal: Principal, requested: str | None, param: str = "organization_id") -> str:
    """The organization a request acts on: the key's own, and no other (403)."""
    if requested is not None and requested != principal.organization_id:
        raise ApiError(
            403, "This API key can only act on its own organization.", ErrorCode.FORBIDDEN_ORGANIZATION, param
        )
    return principal.organization_id
