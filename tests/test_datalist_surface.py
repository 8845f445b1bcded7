"""DataList's edges: sorting by a relation whose target another process deleted after the list
loaded, ``pop()`` of such an object keeping it listed, a sum keeping the one-store check of either
side, and ``guids=`` refused with a query or when not a list of guids."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from conftest import PairURLs

from dal import DataList, DataObject, Property, Relation, configure
from dal.config import Context
from dal.exceptions import ConfigurationError, InvalidQueryError, InvalidValueError, ObjectNotFoundError


class Team(DataObject, hybrid_name="dlsurfteam"):
    __properties: list[Property[Any]] = [Property("name", str, mandatory=False)]


class Player(DataObject, hybrid_name="dlsurfplayer"):
    __properties: list[Property[Any]] = [Property("name", str)]
    __relations = [Relation("team", Team, "players", mandatory=False)]


def _team(name: str = "t") -> Team:
    team = Team(data={"name": name})
    team.save()
    return team


def _players(team: Team, count: int = 3) -> list[Player]:
    made = [Player(data={"name": f"m{index}", "team": team}) for index in range(count)]
    for member in made:
        member.save()
    return made


# --- sorting by a relation whose target was deleted since the list loaded ----------------------


@pytest.mark.parametrize("key", ["team", "team.name", ["team.name", "name"], ["team", "name"]])
def test_sorting_through_a_relation_deleted_since_the_list_loaded_never_raises(
        context: Context, monkeypatch: pytest.MonkeyPatch, key: str | list[str]) -> None:
    team = _team()
    made = _players(team)
    real = Player._load_many.__func__  # type: ignore[attr-defined]

    def racing(cls: type[Player], *args: Any, **kwargs: Any) -> dict[str, Player]:
        loaded: dict[str, Player] = real(cls, *args, **kwargs)
        monkeypatch.setattr(Player, "_load_many", classmethod(real))
        Team(team.guid).delete(abandon=["players"])  # as another process would, after the list loaded
        return loaded

    result = DataList(Player)
    monkeypatch.setattr(Player, "_load_many", classmethod(racing))
    result.sort(key=key)  # each hop deleted meanwhile reads as unset; a relation's name reads its guid
    assert sorted(result.guids) == sorted(member.guid for member in made)
    if key == ["team.name", "name"]:
        assert [member.name for member in result] == ["m0", "m1", "m2"]  # ties broken by the next key
    assert not Team.where().exists()


def test_a_relation_name_sorts_by_the_related_guid_without_loading_the_target(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    teams = [_team(f"t{index}") for index in range(4)]
    for index, team in enumerate(teams):
        Player(data={"name": f"m{index}", "team": team}).save()
    Player(data={"name": "unset"}).save()
    result = DataList(Player)
    list(result)  # loaded once; the sort below must load no Team

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("sort(key='team') loaded a related object")

    monkeypatch.setattr(Team, "_load_many", refuse)
    result.sort(key="team")
    assert [member.team_guid for member in result] == [None, *sorted(team.guid for team in teams)]
    result.sort(key="team", reverse=True)
    assert [member.team_guid for member in result] == [*sorted((t.guid for t in teams), reverse=True), None]


# --- a sum keeps the one-store check of either side ---------------------------------------------


@pytest.mark.parametrize("given_first", [True, False], ids=["given+ran", "ran+given"])
def test_a_sum_of_a_given_and_a_run_list_is_refused_under_another_store(
        context: Context, pair_urls: PairURLs, given_first: bool) -> None:
    made = _players(_team(), 2)
    given = DataList(Player, guids=[made[0].guid])
    ran = DataList(Player)
    total = given + ran if given_first else ran + given
    assert len(total) == 3
    configure(pair_urls.persistent, pair_urls.volatile, namespace=pair_urls.namespace + "-other")
    for use in (len, list, lambda lst: lst[0], lambda lst: lst.guids):
        with pytest.raises(ConfigurationError, match="another configure"):
            use(total)
    both_given = DataList(Player, guids=[made[0].guid]) + DataList(Player, guids=[made[1].guid])
    assert len(both_given) == 2 and list(both_given) == []  # given guids name objects wherever used


def test_a_sum_of_lists_run_under_two_stores_is_refused(context: Context, pair_urls: PairURLs) -> None:
    _players(_team(), 1)
    here = DataList(Player)
    assert len(here) == 1
    configure(pair_urls.persistent, pair_urls.volatile, namespace=pair_urls.namespace + "-other")
    there = DataList(Player)
    assert len(there) == 0
    with pytest.raises(ConfigurationError, match="another configure"):
        here + there
    with pytest.raises(ConfigurationError, match="another configure"):
        there + here


def test_pop_of_an_object_deleted_since_the_list_ran_raises_and_keeps_it_listed(context: Context) -> None:
    made = _players(_team(), 3)
    result = DataList(Player)
    result.sort()
    gone = result.guids[-1]
    Player(gone).delete()
    with pytest.raises(ObjectNotFoundError, match="deleted since the list was made"):
        result.pop()
    assert result.guids[-1] == gone and len(result) == 3  # refused: nothing taken out
    assert result.pop(0).guid == made[0].guid and len(result) == 2


# --- guids= ------------------------------------------------------------------------------------


def test_a_query_and_guids_together_are_refused(local: Context) -> None:
    made = _players(_team(), 2)
    guids = [member.guid for member in made]
    with pytest.raises(InvalidQueryError, match="not both"):
        DataList(Player, {"type": "AND", "items": [("name", "EQUALS", "m0")]}, guids=guids)
    with pytest.raises(InvalidQueryError, match="not both"):
        DataList(Player, Player.name == "m0", guids=guids)
    assert len(DataList(Player, guids=guids)) == 2
    assert [member.name for member in DataList(Player, {"type": "AND", "items": [("name", "EQUALS", "m0")]})
            ] == ["m0"]
    players = Team.where()[0].players  # a reverse list (a query) and its slices, sums, teams still work
    assert len(players[0:1] + players) == 3
    players.sort()
    assert [player.name for player in players] == ["m0", "m1"]


@pytest.mark.parametrize("guids", [5, 2.0, object(), "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
                                   b"1b4e28ba-2fa1-41d2-883f-0016d3cca427", ""])
def test_guids_that_are_not_a_list_of_guids_are_refused(local: Context, guids: object) -> None:
    with pytest.raises(InvalidValueError, match="guids= is a list of guids"):
        DataList(Player, guids=guids)  # type: ignore[arg-type]


@pytest.mark.parametrize("guids", [[], (), set(), iter([]), {"1b4e28ba-2fa1-41d2-883f-0016d3cca427": 1}])
def test_guids_in_any_iterable_are_taken(local: Context, guids: Iterable[str]) -> None:
    assert list(DataList(Player, guids=guids)) == []
