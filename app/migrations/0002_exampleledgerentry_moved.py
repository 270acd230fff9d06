# The example ledger moved to its family (tasks/example, app label "example"), whose first
# migration takes the old table over, rows included. With the family deleted, nothing will:
# the old table is dropped here. (No dependency between the two: the engine's migrations must
# not depend on a family that a user may delete.)

from django.apps import apps as installed
from django.db import migrations

OLD_TABLE = "app_exampleledgerentry"


def drop_old_table(apps, schema_editor):
    if installed.is_installed("tasks.example"):
        return  # tasks/example/migrations/0001 renames it, before or after this runs
    if OLD_TABLE in schema_editor.connection.introspection.table_names():
        schema_editor.execute(f"DROP TABLE {schema_editor.quote_name(OLD_TABLE)}")


def recreate_old_table(apps, schema_editor):
    """Back to the engine's schema before the move (the rows went with the example's table)."""
    if OLD_TABLE not in schema_editor.connection.introspection.table_names():
        schema_editor.create_model(apps.get_model("app", "ExampleLedgerEntry"))


class Migration(migrations.Migration):
    dependencies = [("app", "0001_jobs")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ExampleLedgerEntry")],
            database_operations=[migrations.RunPython(drop_old_table, recreate_old_table)],
        )
    ]
