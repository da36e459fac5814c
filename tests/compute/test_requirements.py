"""Run requirements: what a submitter may ask of a node, checked once (apps/compute/requirements.py)
wherever requirements come in (a run, a reproduction check, a review's rerun), stored in one
shape, and read back with defaults from rows stored before gpus, isolation and network existed."""

import pytest
from django.core.exceptions import ValidationError

from apps.compute.models import Run
from apps.compute.requirements import Requirements, clean_requirements, read_requirements

from .helpers import messages, submit

NOTHING = {"tags": [], "gpu": False, "gpus": 0, "min_gpu_memory_mb": 0, "isolation": None, "network": False}


# --- cleaning what a submitter sends ------------------------------------------------------------------
@pytest.mark.parametrize("raw", [None, "", {}])
def test_no_requirements_are_stored_with_every_key(raw):
    assert clean_requirements(raw) == NOTHING


def test_tags_are_trimmed_lowercased_deduplicated_and_sorted():
    assert clean_requirements({"tags": [" CUDA ", "cuda", "big"]})["tags"] == ["big", "cuda"]


@pytest.mark.parametrize(
    ("raw", "gpus"),
    [
        ({"gpu": True}, 1),
        ({"min_gpu_memory_mb": 40000}, 1),  # asking for GPU memory implies a GPU
        ({"gpus": 2}, 2),
        ({"gpu": True, "gpus": 4}, 4),
        ({"gpu": False, "gpus": 2}, 2),  # `gpu` only says "more than none"
        ({"gpu": False}, 0),
    ],
)
def test_gpu_and_gpu_memory_imply_one_gpu_and_gpus_says_how_many(raw, gpus):
    cleaned = clean_requirements(raw)
    assert (cleaned["gpus"], cleaned["gpu"]) == (gpus, gpus > 0)


def test_every_requirement_is_kept_in_the_stored_shape():
    raw = {
        "tags": ["lab"],
        "gpu": True,
        "gpus": 2,
        "min_gpu_memory_mb": 16000,
        "isolation": "sandbox",
        "network": True,
    }
    assert clean_requirements(raw) == raw


@pytest.mark.parametrize("isolation", ["none", "limits", "sandbox", None])
def test_each_isolation_a_run_may_require(isolation):
    assert clean_requirements({"isolation": isolation})["isolation"] == isolation


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("gpu", "Requirements must be an object"),
        ([], "Requirements must be an object"),
        ({"cores": 4}, "Unknown requirement(s): cores."),
        ({"tags": "cuda"}, "requirements.tags must be a list of non-empty strings."),
        ({"tags": [""]}, "requirements.tags must be a list of non-empty strings."),
        ({"tags": [" "]}, "requirements.tags must be a list of non-empty strings."),
        ({"tags": ["x" * 51]}, "requirements.tags are at most 50 characters each."),
        ({"tags": [f"t{i}" for i in range(51)]}, "requirements.tags may name at most 50 tags."),
        ({"gpu": "yes"}, "requirements.gpu must be true or false."),
        ({"gpu": 1}, "requirements.gpu must be true or false."),
        ({"gpus": -1}, "requirements.gpus must be a whole number from 0 to 64."),
        ({"gpus": 65}, "requirements.gpus must be a whole number from 0 to 64."),
        ({"gpus": True}, "requirements.gpus must be a whole number from 0 to 64."),
        ({"gpus": 1.0}, "requirements.gpus must be a whole number from 0 to 64."),
        ({"gpus": "2"}, "requirements.gpus must be a whole number from 0 to 64."),
        ({"min_gpu_memory_mb": -1}, "requirements.min_gpu_memory_mb must be a whole number from 0 to 2147483647."),
        ({"min_gpu_memory_mb": True}, "requirements.min_gpu_memory_mb must be a whole number from 0 to"),
        ({"min_gpu_memory_mb": 1.5}, "requirements.min_gpu_memory_mb must be a whole number from 0 to"),
        ({"min_gpu_memory_mb": 2**31}, "requirements.min_gpu_memory_mb must be a whole number from 0 to"),
        ({"isolation": "vm"}, "requirements.isolation must be one of none, limits, sandbox"),
        ({"isolation": "bwrap"}, "requirements.isolation must be one of none, limits, sandbox"),  # a node's word
        ({"isolation": ["sandbox"]}, "requirements.isolation must be one of"),
        ({"network": "yes"}, "requirements.network must be true or false."),
        ({"network": None}, "requirements.network must be true or false."),
    ],
)
def test_bad_requirements_are_refused_naming_the_field(raw, message):
    with pytest.raises(ValidationError) as exc:
        clean_requirements(raw)
    assert list(exc.value.message_dict) == ["requirements"]
    assert message in messages(exc)


# --- reading stored rows -------------------------------------------------------------------------------
def test_a_row_stored_with_the_three_old_keys_reads_with_defaults():
    old = {"tags": ["cuda"], "gpu": True, "min_gpu_memory_mb": 8192}
    assert read_requirements(old) == Requirements(tags=("cuda",), gpus=1, min_gpu_memory_mb=8192)
    assert read_requirements({"tags": [], "gpu": False, "min_gpu_memory_mb": 0}) == Requirements()
    assert read_requirements({}).as_json() == NOTHING


@pytest.mark.parametrize(
    "stored",
    [
        None,
        [],
        "gpu",
        {"tags": "gpu", "gpu": "yes", "gpus": "two", "min_gpu_memory_mb": [1], "isolation": ["x"], "network": 1},
        {"gpus": True, "min_gpu_memory_mb": -5, "isolation": {"a": 1}},
        {"gpus": 10**9, "min_gpu_memory_mb": 2**70},
    ],
)
def test_odd_stored_values_read_as_not_asked_for(stored):
    assert read_requirements(stored) == Requirements()


def test_an_isolation_this_site_does_not_know_is_kept_so_no_node_satisfies_it():
    assert read_requirements({"isolation": "vm"}).isolation == "vm"


# --- wherever requirements come in ----------------------------------------------------------------------
@pytest.mark.django_db
def test_a_submitted_run_stores_the_cleaned_requirements(project, version):
    run = submit(project, version, requirements={"tags": [" CUDA "], "gpus": 2, "network": True})
    run.refresh_from_db()
    assert run.requirements == {**NOTHING, "tags": ["cuda"], "gpu": True, "gpus": 2, "network": True}
    assert submit(project, version).requirements == NOTHING


@pytest.mark.django_db
def test_a_run_with_bad_requirements_is_not_stored(project, version):
    with pytest.raises(ValidationError, match=r"requirements\.gpus"):
        submit(project, version, requirements={"gpus": 100})
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_the_api_answers_400_naming_the_requirement(client_for, owner, project, version):
    response = client_for(owner).post(
        "/api/v1/runs/",
        {"project": project.slug, "notebook": version.notebook_id, "requirements": {"gpus": True}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["requirements"] == ["requirements.gpus must be a whole number from 0 to 64."]
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_the_api_shows_an_old_rows_requirements_with_every_key(client_for, owner, project, version):
    run = submit(project, version)
    Run.objects.filter(pk=run.pk).update(requirements={"tags": ["cuda"], "gpu": True, "min_gpu_memory_mb": 0})
    shown = client_for(owner).get(f"/api/v1/runs/{run.pk}/").json()["requirements"]
    assert shown == {**NOTHING, "tags": ["cuda"], "gpu": True, "gpus": 1}
