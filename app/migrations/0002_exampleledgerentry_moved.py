# The example ledger moved to its family (tasks/example, app label "example"). That family's first
# migration takes the old table over, rows included, when it runs first (it asks to); otherwise,
# or with the family deleted, the old table is dropped here.

from django.db import migrations

OLD_TABLE = "app_exampleledgerentry"


def drop_old_table(apps, schema_editor):
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
