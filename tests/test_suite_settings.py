"""The suite's own settings that keep its outcome independent of how loaded the CI host is."""

from __future__ import annotations

import pytest
from conftest import volatile_url_for
from hypothesis import settings

from dal.backends.url import parse_url


def test_hypothesis_examples_have_no_deadline() -> None:
    # a deadline fails an example that a descheduled process made slow ("Unreliable test timings")
    assert settings().deadline is None


@pytest.mark.memcached
def test_the_shared_memcached_is_read_with_a_timeout_a_loaded_host_cannot_outlast(
        request: pytest.FixtureRequest) -> None:
    url = parse_url(volatile_url_for("memcached", request))
    assert url.option("timeout", float, 0.25) >= 2
