"""A mirrored object's ``info`` is written by refreshes only: changed in place, it is never saved.

Assigning it raises; its dict is still the object's own, so ``save()`` refuses a change made in
place rather than storing an altered copy served afterwards as the remote's last answer.
"""

from __future__ import annotations

import uuid

import pytest
from mirror_hybrids import Clock, MirroredVM, answer, instance_path

from dal.config import Context
from dal.exceptions import ReadOnlyFieldError
from dal.testing.remote import Remote


def test_info_changed_in_place_is_refused_at_save_and_nothing_is_written(
        context: Context, remote: Remote, clock: Clock) -> None:
    hostname = f"vm-{uuid.uuid4().hex[:8]}"
    remote.answers[instance_path(hostname)] = answer(hostname, "running")
    obj = MirroredVM(data={"hostname": hostname})
    obj.save()
    local = MirroredVM(obj.guid)
    assert local.status == "running"  # refreshed: info holds the remote's answer
    local.info["status"] = "hacked"
    local.note = "a property of its own"
    with pytest.raises(ReadOnlyFieldError, match="info changed in place"):
        local.save()
    again = MirroredVM(obj.guid)
    assert again.info == answer(hostname, "running") and again.note != "a property of its own"
    fresh = MirroredVM(obj.guid)
    fresh.note = "a property of its own"
    fresh.save()  # an object whose info was left alone saves as ever
    assert MirroredVM(obj.guid).note == "a property of its own"
