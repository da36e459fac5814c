"""Sign-up: look-alike usernames are refused (NFKC + TR39 skeleton, through indexed keys) and one
address may only try so often."""

import importlib

import pytest
from django.apps import apps as django_apps
from django.contrib.auth import SESSION_KEY
from django.core.exceptions import ValidationError
from django.test import Client

from apps.accounts.confusables import skeleton, username_keys
from apps.accounts.models import User
from apps.accounts.services import user_create

from ..factories import make_user

SIGNUP_URL = "/accounts/signup/"
STRONG_PASSWORD = "lichen-orbit-4711-quartz"


def signup(client: Client, username: str):
    return client.post(
        SIGNUP_URL,
        {"username": username, "email": "", "password1": STRONG_PASSWORD, "password2": STRONG_PASSWORD},
    )


# --- the skeleton ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "lookalike"),
    [
        ("alice", "\u0430lice"),  # Cyrillic small a
        ("alice", "al\u0456ce"),  # Cyrillic small i
        ("alice", "aIice"),  # capital I for l
        ("paypal", "paypa1"),  # digit one for l
        ("mary", "rnary"),  # r n for m
        ("bob", "b\u03bfb"),  # Greek omicron
        ("Oslo", "0slo"),  # digit zero for capital O
    ],
    ids=["cyrillic-a", "cyrillic-i", "capital-i", "digit-one", "rn", "omicron", "zero"],
)
def test_lookalikes_share_a_skeleton(name, lookalike):
    assert skeleton(lookalike) == skeleton(name)


@pytest.mark.parametrize(("one", "other"), [("alice", "alicia"), ("bob", "rob"), ("anna", "anne"), ("lab", "tab")])
def test_different_names_have_different_skeletons(one, other):
    assert skeleton(one) != skeleton(other)


def test_the_skeleton_is_a_fixed_point():
    for text in ["\u0430lice", "rnary", "\uff41\uff4c\uff49\uff43\uff45", "Ĳssel", "ǉubljana"]:
        assert skeleton(skeleton(text)) == skeleton(text)


def test_keys_are_short_digests_even_for_names_that_expand():
    plain, folded = username_keys("\ucb94" * 150)  # each Hangul syllable becomes 21 bytes
    assert len(plain) == len(folded) == 64


# --- the sign-up form -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "lookalike",
    ["\u0430lice", "aIice", "\u0410LICE", "al\u0456ce"],
    ids=["cyrillic-a", "capital-i", "cyrillic-capitals", "cyrillic-i"],
)
def test_signup_refuses_a_username_confusable_with_an_existing_one(db, lookalike):
    make_user("alice")
    response = signup(Client(), lookalike)
    assert response.status_code == 200
    errors = response.context["form"].errors["username"]
    assert errors == [f"“{lookalike}” looks too much like an existing username. Please choose another."]
    assert errors[0] in response.content.decode()
    assert not User.objects.filter(username=lookalike).exists()


def test_signup_refuses_a_fullwidth_copy_of_an_existing_name(db):
    make_user("alice")
    response = signup(Client(), "\uff41\uff4c\uff49\uff43\uff45")  # NFKC makes it "alice"
    assert response.status_code == 200
    assert response.context["form"].errors["username"]
    assert User.objects.count() == 1


def test_signup_accepts_a_name_that_only_resembles_in_spelling(db):
    make_user("alice")
    client = Client()
    response = signup(client, "alicia")
    assert response.status_code == 302
    assert SESSION_KEY in client.session


def test_the_lookalike_check_costs_the_same_queries_however_many_users_exist(db, django_assert_num_queries):
    make_user("alice")
    with django_assert_num_queries(2):  # Django's case check, then ours through the key indexes
        assert User.objects.confusable_with("\u0430lice").exists()
        assert not User.objects.filter(username__iexact="\u0430lice").exists()
    for n in range(50):
        make_user(f"member{n}")
    with django_assert_num_queries(1):
        assert User.objects.confusable_with("\u0430lice").exists()
    sql = str(User.objects.confusable_with("\u0430lice").query)
    assert "skeleton_sha256" in sql
    indexed = {field.name for field in User._meta.concrete_fields if getattr(field, "db_index", False)}
    assert {"skeleton_sha256", "folded_skeleton_sha256"} <= indexed


def test_the_service_refuses_a_lookalike_too(db):
    make_user("alice")
    with pytest.raises(ValidationError) as refused:
        user_create(username="\u0430lice", password=STRONG_PASSWORD)
    assert "username" in refused.value.message_dict


def test_renaming_a_user_updates_the_keys(db):
    user = make_user("carol")
    user.username = "alice"
    user.save(update_fields=["username"])
    assert User.objects.confusable_with("\u0430lice").get() == user


def test_editing_a_user_whose_name_already_had_a_lookalike_is_allowed(db):
    make_user("alice")
    twin = make_user("\u0430lice")  # created before the check existed (factories skip full_clean)
    twin.email = "twin@example.org"
    twin.first_name = "Twin"
    twin.full_clean()  # unchanged name: not refused


def test_the_migration_fills_the_keys_of_existing_users(db):
    user = make_user("alice")
    User.objects.update(skeleton_sha256="", folded_skeleton_sha256="")
    migration = importlib.import_module("apps.accounts.migrations.0002_username_skeletons")
    migration.fill_skeletons(django_apps, None)
    user.refresh_from_db()
    assert (user.skeleton_sha256, user.folded_skeleton_sha256) == username_keys("alice")


# --- the sign-up rate -----------------------------------------------------------------------------
def test_signup_without_a_username_names_the_field_instead_of_failing(db):
    response = signup(Client(), "")
    assert response.status_code == 200
    assert response.context["form"].errors["username"]


def test_signup_is_limited_per_address(db, settings):
    settings.REPROLAB_SIGNUPS_PER_HOUR = 2
    client = Client(REMOTE_ADDR="198.51.100.41")
    assert signup(client, "first").status_code == 302
    assert signup(Client(REMOTE_ADDR="198.51.100.41"), "second").status_code == 302
    response = signup(Client(REMOTE_ADDR="198.51.100.41"), "third")
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 3600
    assert "Too many sign-ups from your address" in response.content.decode()
    assert not User.objects.filter(username="third").exists()


def test_the_signup_limit_counts_failed_attempts_too(db, settings):
    settings.REPROLAB_SIGNUPS_PER_HOUR = 2
    for _ in range(2):
        assert signup(Client(REMOTE_ADDR="198.51.100.42"), "").status_code == 200
    assert signup(Client(REMOTE_ADDR="198.51.100.42"), "valid-name").status_code == 429


def test_the_signup_limit_leaves_other_addresses_alone(db, settings):
    settings.REPROLAB_SIGNUPS_PER_HOUR = 1
    assert signup(Client(REMOTE_ADDR="198.51.100.43"), "first").status_code == 302
    assert signup(Client(REMOTE_ADDR="198.51.100.44"), "second").status_code == 302


def test_the_signup_page_itself_is_never_limited(db, settings):
    settings.REPROLAB_SIGNUPS_PER_HOUR = 1
    client = Client(REMOTE_ADDR="198.51.100.45")
    for _ in range(3):
        assert client.get(SIGNUP_URL).status_code == 200
