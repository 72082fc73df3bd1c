"""How the Python client reports answers that are not what it asked for: a problem it can
read, an error body that is not a problem object, a redirect it must not follow."""

from __future__ import annotations

import httpx
import pytest

from plumbline.client import Plumbline, PlumblineError


def client_answering(response: httpx.Response) -> Plumbline:
    transport = httpx.MockTransport(lambda request: response)
    return Plumbline("http://plumbline.test", "pl_key", http=httpx.Client(transport=transport))


def test_a_problem_keeps_its_status_and_fields() -> None:
    problem = {"title": "Unprocessable", "detail": "outputs[3].key: unknown", "field": "x"}
    client = client_answering(httpx.Response(422, json=problem))
    with pytest.raises(PlumblineError) as error:
        client.run(1).refresh()
    assert (error.value.status, error.value.problem) == (422, problem)
    assert "outputs[3].key: unknown" in str(error.value)


@pytest.mark.parametrize("body", [["upstream", "down"], "bad gateway", 502])
def test_an_error_whose_json_is_not_an_object_is_still_a_plumbline_error(body: object) -> None:
    client = client_answering(httpx.Response(502, json=body))
    with pytest.raises(PlumblineError) as error:
        client.run(1).refresh()
    assert error.value.status == 502
    assert error.value.problem == {"detail": body}


def test_a_redirect_is_an_error_naming_where_it_points() -> None:
    moved = httpx.Response(308, headers={"location": "https://plumbline.test/api/v1/runs/1"})
    client = client_answering(moved)
    with pytest.raises(PlumblineError) as error:
        client.run(1).refresh()
    assert error.value.status == 308
    assert "https://plumbline.test/api/v1/runs/1" in str(error.value)
