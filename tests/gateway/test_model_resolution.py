"""gateway.model_resolution: what a request's `model` names, and whether the caller may use it."""

from __future__ import annotations

import pytest

from gateway.auth import Principal
from gateway.errors import ApiError
from gateway.model_resolution import Catalog, ModelEntry, Offering, Resolved

SMALL_ID = "0b9f3c2e-7a1d-4e5f-9c8b-a1b2c3d4e5f6"
LARGE_ID = "22222222-2222-4222-8222-222222222222"
OLD_ID = "33333333-3333-4333-8333-333333333333"
PRIVATE_ID = "44444444-4444-4444-8444-444444444444"
OPEN_ID = "55555555-5555-4555-8555-555555555555"
UNKNOWN_ID = "99999999-9999-4999-8999-999999999999"

DEMO, ACME, OTHER = "org-demo", "org-acme", "org-other"

MODELS = [
    ModelEntry(SMALL_ID, "Qwen/small", True),
    ModelEntry(LARGE_ID, "Qwen/large", True),
    ModelEntry(OLD_ID, "Meta/old", False),
    ModelEntry(PRIVATE_ID, "Acme/secret", True),
    ModelEntry(OPEN_ID, "Mistral/open", True),  # published by no offering
]


def offering(name: str, org: str, model: str, *, public: bool = False, active: bool = True,
             granted: frozenset[str] = frozenset()) -> Offering:
    return Offering(name=name, organization_id=org, model_id=model, public=public, is_active=active, granted=granted)


OFFERINGS = [
    offering("demo/small", DEMO, SMALL_ID, public=True),
    offering("demo/large", DEMO, LARGE_ID, granted=frozenset({ACME})),
    offering("demo/large-beta", DEMO, LARGE_ID, active=False, public=True),
    offering("demo/old", DEMO, OLD_ID, public=True),
    offering("acme/secret", ACME, PRIVATE_ID),
]
CATALOG = Catalog(MODELS, OFFERINGS)


def principal(org: str, *scopes: str) -> Principal:
    return Principal(key_id=f"key-{org}", organization_id=org, organization_slug=org, scopes=frozenset(scopes))


DEMO_KEY = principal(DEMO, "inference")
ACME_KEY = principal(ACME, "inference")
OTHER_KEY = principal(OTHER, "inference")
OTHER_ADMIN = principal(OTHER, "inference", "admin")


@pytest.mark.parametrize(
    ("name", "who", "resolved"),
    [
        (SMALL_ID, OTHER_KEY, Resolved(SMALL_ID, "Qwen/small")),
        # UUIDs are case-insensitive on input (RFC 4122); the catalog holds them lower-case.
        (SMALL_ID.upper(), OTHER_KEY, Resolved(SMALL_ID, "Qwen/small")),
        ("Qwen/small", OTHER_KEY, Resolved(SMALL_ID, "Qwen/small")),
        ("demo/small", OTHER_KEY, Resolved(SMALL_ID, "Qwen/small")),
        # Private offering: its own organization, and organizations it is granted to.
        ("demo/large", DEMO_KEY, Resolved(LARGE_ID, "Qwen/large")),
        ("demo/large", ACME_KEY, Resolved(LARGE_ID, "Qwen/large")),
        ("Qwen/large", ACME_KEY, Resolved(LARGE_ID, "Qwen/large")),
        (LARGE_ID, DEMO_KEY, Resolved(LARGE_ID, "Qwen/large")),
        ("acme/secret", ACME_KEY, Resolved(PRIVATE_ID, "Acme/secret")),
        ("Acme/secret", ACME_KEY, Resolved(PRIVATE_ID, "Acme/secret")),
        # An admin key may name any active model directly.
        ("Acme/secret", OTHER_ADMIN, Resolved(PRIVATE_ID, "Acme/secret")),
        (PRIVATE_ID, OTHER_ADMIN, Resolved(PRIVATE_ID, "Acme/secret")),
        # A model no offering publishes is open to every key.
        ("Mistral/open", OTHER_KEY, Resolved(OPEN_ID, "Mistral/open")),
        (OPEN_ID, OTHER_KEY, Resolved(OPEN_ID, "Mistral/open")),
    ],
    ids=[
        "uuid", "uuid-upper-case", "repo-id", "public-offering-any-org", "private-offering-own-org",
        "private-offering-granted-org", "model-of-granted-offering-by-repo", "model-of-own-offering-by-uuid",
        "acme-own-offering", "acme-own-model-by-repo", "admin-private-model-by-repo", "admin-private-model-by-uuid",
        "unpublished-model-by-repo", "unpublished-model-by-uuid",
    ],
)
def test_resolve_allows(name: str, who: Principal, resolved: Resolved) -> None:
    assert CATALOG.resolve(name, who) == resolved


@pytest.mark.parametrize(
    ("name", "who", "status", "code"),
    [
        ("nope/nothing", DEMO_KEY, 404, "model_not_found"),
        ("Qwen/Small", DEMO_KEY, 404, "model_not_found"),
        (UNKNOWN_ID, OTHER_ADMIN, 404, "model_not_found"),
        ("", DEMO_KEY, 404, "model_not_found"),
        # Inactive model, by every name, even for an admin.
        ("Meta/old", OTHER_ADMIN, 404, "model_not_found"),
        (OLD_ID, DEMO_KEY, 404, "model_not_found"),
        ("demo/old", DEMO_KEY, 404, "model_not_found"),
        # Inactive offering of an active model.
        ("demo/large-beta", DEMO_KEY, 404, "model_not_found"),
        ("demo/large-beta", OTHER_ADMIN, 404, "model_not_found"),
        # Private offering used by an organization it is not granted to.
        ("demo/large", OTHER_KEY, 403, "model_access_denied"),
        ("acme/secret", DEMO_KEY, 403, "model_access_denied"),
        # A model only private offerings publish cannot be reached by naming the model itself.
        ("Acme/secret", DEMO_KEY, 403, "model_access_denied"),
        (PRIVATE_ID, OTHER_KEY, 403, "model_access_denied"),
        ("Qwen/large", OTHER_KEY, 403, "model_access_denied"),
    ],
    ids=[
        "unknown-name", "repo-id-is-case-sensitive", "unknown-uuid", "empty", "inactive-model-admin",
        "inactive-model-uuid", "offering-of-inactive-model", "inactive-offering", "inactive-offering-admin",
        "private-offering-other-org", "private-offering-of-other-org", "private-model-by-repo-other-org",
        "private-model-by-uuid-other-org", "model-with-inactive-public-offering-only-private-left",
    ],
)
def test_resolve_refuses(name: str, who: Principal, status: int, code: str) -> None:
    with pytest.raises(ApiError) as caught:
        CATALOG.resolve(name, who)
    assert (caught.value.status, caught.value.code, caught.value.param) == (status, code, "model")
    assert name in caught.value.message


def test_refusals_are_openai_shaped() -> None:
    with pytest.raises(ApiError) as missing:
        CATALOG.resolve("nope/nothing", DEMO_KEY)
    with pytest.raises(ApiError) as denied:
        CATALOG.resolve("acme/secret", DEMO_KEY)
    assert b'"type":"invalid_request_error"' in missing.value.body()
    assert b'"type":"permission_error"' in denied.value.body()


def test_from_rows_builds_names_visibility_and_grants() -> None:
    catalog = Catalog.from_rows(
        [{"id": SMALL_ID, "hf_repo_id": "Qwen/small", "is_active": True}],
        [
            {"org_slug": "demo", "model_code": "small", "organization_id": DEMO, "model_id": SMALL_ID,
             "visibility": "private", "is_active": True, "granted": [ACME]},
        ],
    )
    assert catalog.resolve("demo/small", ACME_KEY) == Resolved(SMALL_ID, "Qwen/small")
    with pytest.raises(ApiError):
        catalog.resolve("demo/small", OTHER_KEY)


@pytest.mark.parametrize(
    ("who", "names"),
    [
        (
            DEMO_KEY,
            [("Mistral/open", OPEN_ID), ("Qwen/large", LARGE_ID), ("Qwen/small", SMALL_ID),
             ("demo/large", LARGE_ID), ("demo/small", SMALL_ID)],
        ),
        (
            ACME_KEY,
            [("Acme/secret", PRIVATE_ID), ("Mistral/open", OPEN_ID), ("Qwen/large", LARGE_ID),
             ("Qwen/small", SMALL_ID), ("acme/secret", PRIVATE_ID), ("demo/large", LARGE_ID),
             ("demo/small", SMALL_ID)],
        ),
        (OTHER_KEY, [("Mistral/open", OPEN_ID), ("Qwen/small", SMALL_ID), ("demo/small", SMALL_ID)]),
        (
            OTHER_ADMIN,
            [("Acme/secret", PRIVATE_ID), ("Mistral/open", OPEN_ID), ("Qwen/large", LARGE_ID),
             ("Qwen/small", SMALL_ID), ("demo/small", SMALL_ID)],
        ),
    ],
    ids=["own-org", "granted-org", "other-org", "admin"],
)
def test_visible_names(who: Principal, names: list[tuple[str, str]]) -> None:
    # Every model id the workers serve, including an inactive and an unknown one, which never show.
    served = [SMALL_ID, LARGE_ID, OLD_ID, PRIVATE_ID, OPEN_ID, UNKNOWN_ID]
    assert CATALOG.visible_names(served, who) == names


def test_visible_names_only_for_the_models_given() -> None:
    assert CATALOG.visible_names([SMALL_ID], OTHER_KEY) == [("Qwen/small", SMALL_ID), ("demo/small", SMALL_ID)]
    assert CATALOG.visible_names([], OTHER_ADMIN) == []
