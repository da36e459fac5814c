"""A run's inputs must be placeable in its working directory: two files at one path (from two
dataset versions), a file where another needs a folder, or one of the agent's own names
(`_input.ipynb`, `_output.ipynb`, `.kernel`, `.tmp`) are refused at submission, naming the file."""

import io

import pytest
from django.core.exceptions import ValidationError

from apps.compute.models import Run
from apps.projects import services as project_services

from .helpers import messages, submit


def dataset(project, owner, name: str, *paths: str):
    created = project_services.dataset_create(project=project, name=name, creator=owner)
    version, _ = project_services.dataset_add_files(
        dataset=created,
        files=[project_services.IncomingFile(path=p, content=io.BytesIO(p.encode())) for p in paths],
        uploader=owner,
    )
    return version


@pytest.mark.django_db
def test_inputs_at_distinct_paths_are_taken(project, version, owner):
    run = submit(
        project,
        version,
        dataset_versions=[dataset(project, owner, "a", "x.csv"), dataset(project, owner, "b", "y.csv")],
    )
    assert run.input_datasets.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("first", "second", "said"),
    [
        (("data.csv",), ("data.csv",), "'data.csv' is in both a@v1 and b@v1"),
        (("data",), ("data/more.csv",), "has 'data/more.csv' under a file of the same name"),
        (("_input.ipynb",), ("ok.csv",), "a name the run's node keeps for itself"),
        ((".kernel/warm.json",), ("ok.csv",), "a name the run's node keeps for itself"),
    ],
)
def test_inputs_that_cannot_be_placed_are_refused_and_nothing_is_stored(project, version, owner, first, second, said):
    versions = [dataset(project, owner, "a", *first), dataset(project, owner, "b", *second)]
    with pytest.raises(ValidationError) as refused:
        submit(project, version, dataset_versions=versions)
    assert said in messages(refused)
    assert not Run.objects.exists()
