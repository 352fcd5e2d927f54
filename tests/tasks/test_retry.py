"""Bad input is failed at once, other errors are retried (issue 12, item 14)."""

from __future__ import annotations

import pytest
from prefect import task
from prefect.states import Failed

from tasks.retry import retry_unless_bad_input


def test_condition_on_states():
    assert retry_unless_bad_input(None, None, Failed(data=ValueError("bad line"))) is False
    assert retry_unless_bad_input(None, None, Failed(data=FileNotFoundError("gone"))) is False
    assert retry_unless_bad_input(None, None, Failed(data=OSError("network"))) is True


@pytest.mark.flow
@pytest.mark.parametrize("error, calls", [(ValueError("images.txt: line 3: bad"), 1), (OSError("flaky disk"), 3)])
def test_a_task_retries_only_what_is_not_bad_input(prefect_server, error, calls):
    seen = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_unless_bad_input)
    def flaky():
        seen.append(1)
        raise error

    with pytest.raises(type(error)):
        flaky()
    assert len(seen) == calls
