"""The example family as a family: found in its folder, and moved out of the engine without
losing a database's rows."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from config import families


def test_families_are_found_in_the_folder() -> None:
    assert "tasks.example" in families.family_apps()
    assert {"tasks.example.tasks", "tasks.maintenance"} <= set(families.task_modules())
    assert families.api_modules()["example"] == "tasks.example.api"


@pytest.mark.django_db(transaction=True)
def test_a_database_made_before_the_example_moved_keeps_its_ledger() -> None:
    """The ledger was app.ExampleLedgerEntry; the example's first migration takes the table over."""
    executor = MigrationExecutor(connection)
    executor.migrate([("app", "0001_jobs"), ("example", None)])  # main before the move
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO app_exampleledgerentry (account, amount, created_at) "
            "VALUES ('alice', 10, CURRENT_TIMESTAMP)"
        )
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    from tasks.example.models import LedgerEntry

    assert list(LedgerEntry.objects.values_list("account", "amount")) == [("alice", 10)]
    LedgerEntry.objects.create(account="bob", amount=5)  # the id sequence came along too
    assert "app_exampleledgerentry" not in connection.introspection.table_names()
