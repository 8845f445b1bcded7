"""Pydantic models of a mirrored hybrid: ``to_model()`` refreshes a stale object first, as any read does,
and ``from_model`` takes back a full body of what ``to_model()`` gave, whose ``info``, ``cached_at`` and
``error`` (written by refreshes only) it never takes: a refresh since the GET changes them; nor the parsed
properties the body holds as its own ``info`` gives them (the GET's values), which that refresh wrote too."""

from __future__ import annotations

import json
import uuid

import pytest
from mirror_hybrids import TIMEOUT, Clock, MirroredVM, answer, instance_path

from dal.config import Context
from dal.exceptions import ReadOnlyFieldError
from dal.testing.remote import Remote


def _saved(remote: Remote) -> tuple[str, str]:
    """Save a mirrored object never refreshed yet (stale); return its guid and hostname (kept: reading
    the saved instance's ``hostname`` would refresh it)."""
    hostname = f"vm-{uuid.uuid4().hex[:8]}"
    remote.answers[instance_path(hostname)] = answer(hostname)
    obj = MirroredVM(data={"hostname": hostname})
    obj.save()
    return obj.guid, hostname


def test_to_model_of_a_stale_object_refreshes_it_first(
        context: Context, remote: Remote, clock: Clock) -> None:
    guid, hostname = _saved(remote)
    model = MirroredVM(guid).to_model()  # saved, never refreshed: stale
    assert (model.status, model.ram, model.info) == ("running", 512, answer(hostname))  # type: ignore[attr-defined]
    assert remote.count() == 1 and not MirroredVM(guid).stale
    remote.answers[instance_path(hostname)] = answer(hostname, "stopped")
    clock.time += TIMEOUT  # gone stale: the next instance's to_model() asks the remote again
    assert MirroredVM(guid).to_model().status == "stopped"  # type: ignore[attr-defined]
    assert remote.count() == 2


def test_to_model_after_a_failed_refresh_serves_what_is_stored_as_a_read_does(
        context: Context, remote: Remote, clock: Clock) -> None:
    guid, hostname = _saved(remote)
    assert MirroredVM(guid).status == "running"
    clock.time += TIMEOUT
    remote.failures.update({instance_path(hostname): 503, "/bulk": 503})
    model = MirroredVM(guid).to_model()  # never raises: the last data, and what went wrong
    assert model.status == "running" and "503" in model.error  # type: ignore[attr-defined]
    assert remote.count() == 2 and MirroredVM(guid).stale


def test_a_full_json_round_trip_of_a_mirrored_object_writes_its_own_fields(
        context: Context, remote: Remote, clock: Clock) -> None:
    guid, hostname = _saved(remote)
    schema = MirroredVM.model()
    body = MirroredVM(guid).to_model().model_dump_json()  # a GET: info, cached_at, error included
    MirroredVM.from_model(schema.model_validate_json(body)).save()  # the PUT of it, unchanged
    MirroredVM.from_model(schema.model_validate({**json.loads(body), "note": "mine"})).save()
    again = MirroredVM(guid)
    assert again.note == "mine" and again.info == answer(hostname) and remote.count() == 1


@pytest.mark.parametrize(("field", "value"), [("info", {"status": "hacked"}), ("cached_at", 1.0),
                                              ("error", "made up")])
def test_from_model_never_takes_a_mirror_field_from_a_body(
        context: Context, remote: Remote, clock: Clock, field: str, value: object) -> None:
    guid, _ = _saved(remote)
    schema = MirroredVM.model()
    dumped = {**MirroredVM(guid).to_model().model_dump(mode="json"), field: value, "note": "mine"}
    refreshed = MirroredVM(guid)
    held = (refreshed.info, refreshed.cached_at, refreshed.error)
    MirroredVM.from_model(schema.model_validate(dumped)).save()  # the other fields are written
    again = MirroredVM(guid)
    assert again.note == "mine" and (again.info, again.cached_at, again.error) == held
    new = {**dumped, "guid": str(uuid.uuid4()), "hostname": "other"}  # a new object: none taken either
    fresh = MirroredVM.from_model(schema.model_validate(new))
    assert (fresh.info, fresh.cached_at, fresh.error) == (None, None, None) and fresh.note == "mine"
    with pytest.raises(ReadOnlyFieldError, match="call refresh_info"):  # assigning is still refused
        MirroredVM(guid).info = {}


def _refreshed_after_a_get(remote: Remote, clock: Clock) -> tuple[str, str, dict[str, object]]:
    """Save a mirrored object, GET it (status running, ram 512), then let a refresh store a new answer
    (stopped, 1024); return its guid, hostname and the GET's body as JSON data."""
    guid, hostname = _saved(remote)
    body = json.loads(MirroredVM(guid).to_model().model_dump_json())  # the GET
    remote.answers[instance_path(hostname)] = answer(hostname, "stopped", memory=1024)
    clock.time += TIMEOUT
    assert (MirroredVM(guid).status, MirroredVM(guid).ram) == ("stopped", 1024)  # a refresh after the GET
    return guid, hostname, body


def test_a_put_of_a_body_from_before_a_refresh_keeps_what_the_refresh_wrote(
        context: Context, remote: Remote, clock: Clock) -> None:
    guid, hostname, body = _refreshed_after_a_get(remote, clock)
    MirroredVM.from_model(MirroredVM.model().model_validate({**body, "note": "mine"})).save()  # the PUT
    again = MirroredVM(guid)
    assert again.note == "mine" and again.info == answer(hostname, "stopped", memory=1024)
    # the parsed properties the body holds as its own info gives them are the GET's: the refresh's stay
    assert (again.status, again.ram) == ("stopped", 1024) and not again.stale and remote.count() == 2


def test_a_put_changing_a_parsed_property_writes_it(context: Context, remote: Remote, clock: Clock) -> None:
    guid, hostname, body = _refreshed_after_a_get(remote, clock)
    MirroredVM.from_model(MirroredVM.model().model_validate({**body, "status": "paused"})).save()
    again = MirroredVM(guid)  # the client's change is taken; what it did not change, the refresh's stays
    assert (again.status, again.ram, again.info) == ("paused", 1024, answer(hostname, "stopped", memory=1024))


@pytest.mark.parametrize("info", [None, {"name": "no status"}], ids=["never-refreshed", "unparsable"])
def test_a_put_whose_info_parses_to_nothing_takes_its_values_as_given(
        context: Context, remote: Remote, clock: Clock, info: object) -> None:
    guid, _, body = _refreshed_after_a_get(remote, clock)
    MirroredVM.from_model(MirroredVM.model().model_validate({**body, "info": info})).save()
    again = MirroredVM(guid)  # nothing to compare with: each value the body holds is written
    assert (again.status, again.ram, again.info["status"]) == ("running", 512, "stopped")


def _drifted(remote: Remote) -> str:
    """Save a refreshed object (its info says running) whose status was then set locally to maintenance."""
    guid, _ = _saved(remote)
    vm = MirroredVM(guid)
    assert vm.status == "running"  # type: ignore[attr-defined]
    vm.status = "maintenance"  # type: ignore[attr-defined]
    vm.save()
    return guid


def test_a_put_setting_a_parsed_property_to_what_info_gives_is_written(
        context: Context, remote: Remote, clock: Clock) -> None:
    """No refresh since the GET: the body's status equal to what its info parses to is the client's."""
    guid = _drifted(remote)
    body = json.loads(MirroredVM(guid).to_model().model_dump_json())
    assert body["status"] == "maintenance" and body["info"]["status"] == "running"
    MirroredVM.from_model(MirroredVM.model().model_validate({**body, "status": "running"})).save()
    assert MirroredVM(guid).status == "running"  # type: ignore[attr-defined]
    model = MirroredVM(guid).to_model()  # a model to_model() made tells its own change
    model.status = "maintenance"  # type: ignore[attr-defined]
    MirroredVM.from_model(model).save()
    assert MirroredVM(guid).status == "maintenance"  # type: ignore[attr-defined]
    model = MirroredVM(guid).to_model()
    model.status = "running"  # type: ignore[attr-defined]
    MirroredVM.from_model(model).save()
    assert MirroredVM(guid).status == "running"  # type: ignore[attr-defined]
