"""Model resolution: what a request's `model` names, and whether the caller may use it.

A request names a model three ways: its UUID, its `hf_repo_id`, or an offering `org_slug/model_code`
(which is forwarded as the model's `hf_repo_id`). Offerings are also the access rule:
- an offering is usable by its own organization, by organizations it is granted to, and by everyone
  when public;
- a model named directly (UUID or repo id) is usable by admin keys, by any key when no offering
  publishes it, and otherwise by keys that may use at least one of its active offerings (so a private
  offering cannot be bypassed by naming its model).
Unknown or inactive → 404; known but not allowed → 403.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.auth import Principal
from gateway.error_codes import ErrorCode
from gateway.errors import ApiError, not_found


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: str
    hf_repo_id: str
    is_active: bool


@dataclass(frozen=True, slots=True)
class Offering:
    name: str  # org_slug/model_code
    organization_id: str
    model_id: str
    public: bool
    is_active: bool
    granted: frozenset[str]

    def allows(self, principal: Principal) -> bool:
        org = principal.organization_id
        return self.public or org == self.organization_id or org in self.granted


@dataclass(frozen=True, slots=True)
class Resolved:
    model_id: str
    hf_repo_id: str


class Catalog:
    """An immutable snapshot; the gateway swaps in a new one on each refresh."""

    __slots__ = ("by_id", "by_repo", "offerings", "offerings_by_model")

    def __init__(self, models: Iterable[ModelEntry] = (), offerings: Iterable[Offering] = ()) -> None:
        self.by_id = {m.id: m for m in models}
        self.by_repo = {m.hf_repo_id: m for m in self.by_id.values()}
        self.offerings = {o.name: o for o in offerings}
        by_model: dict[str, list[Offering]] = {}
        for offering in self.offerings.values():
            by_model.setdefault(offering.model_id, []).append(offering)
        self.offerings_by_model = by_model

    @classmethod
    def from_rows(cls, models: Iterable[Mapping[str, Any]], offerings: Iterable[Mapping[str, Any]]) -> Catalog:
        return cls(
            (ModelEntry(str(m["id"]), m["hf_repo_id"], m["is_active"]) for m in models),
            (
                Offering(
                    name=f"{o['org_slug']}/{o['model_code']}",
                    organization_id=str(o["organization_id"]),
                    model_id=str(o["model_id"]),
                    public=o["visibility"] == "public",
                    is_active=o["is_active"],
                    granted=frozenset(str(g) for g in o["granted"]),
                )
                for o in offerings
            ),
        )

    def resolve(self, name: str, principal: Principal) -> Resolved:
        # UUIDs are case-insensitive on input; Postgres prints them lower-case.
        model = self.by_id.get(name.lower()) if _is_uuid(name) else self.by_repo.get(name)
        if model is not None:
            if not model.is_active:
                raise _unknown(name)
            if not self.may_use_directly(model.id, principal):
                raise _forbidden(name)
            return Resolved(model.id, model.hf_repo_id)
        offering = self.offerings.get(name)
        if offering is None or not offering.is_active:
            raise _unknown(name)
        target = self.by_id.get(offering.model_id)
        if target is None or not target.is_active:
            raise _unknown(name)
        if not offering.allows(principal):
            raise _forbidden(name)
        return Resolved(target.id, target.hf_repo_id)

    def may_use_directly(self, model_id: str, principal: Principal) -> bool:
        if principal.is_admin:
            return True
        offerings = self.offerings_by_model.get(model_id)
        if not offerings:
            return True
        return any(o.is_active and o.allows(principal) for o in offerings)

    def visible_names(self, model_ids: Iterable[str], principal: Principal) -> list[tuple[str, str]]:
        """(name, model id) of every name the caller may use for these models, for GET /v1/models."""
        names: list[tuple[str, str]] = []
        for model_id in model_ids:
            model = self.by_id.get(model_id)
            if model is None or not model.is_active:
                continue
            if self.may_use_directly(model_id, principal):
                names.append((model.hf_repo_id, model_id))
            for offering in self.offerings_by_model.get(model_id, ()):
                if offering.is_active and offering.allows(principal):
                    names.append((offering.name, model_id))
        return sorted(names)


def _is_uuid(name: str) -> bool:
    if len(name) != 36:
        return False
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True


def _unknown(name: str) -> ApiError:
    return not_found(f"The model `{name}` does not exist or is not active.", ErrorCode.MODEL_NOT_FOUND, "model")


def _forbidden(name: str) -> ApiError:
    return ApiError(403, f"This API key has no access to the model `{name}`.", ErrorCode.MODEL_ACCESS_DENIED, "model")
