# The example ledger, moved here from the engine (app). On a database made before the move, the
# old table app_exampleledgerentry is renamed, rows and all; elsewhere the table is created.
# When you copy this family, delete its migrations and run `makemigrations <name>` instead.

from django.db import migrations, models

OLD_TABLE = "app_exampleledgerentry"


def adopt_or_create(apps, schema_editor):
    LedgerEntry = apps.get_model("example", "LedgerEntry")
    if OLD_TABLE in schema_editor.connection.introspection.table_names():
        schema_editor.alter_db_table(LedgerEntry, OLD_TABLE, LedgerEntry._meta.db_table)
    else:
        schema_editor.create_model(LedgerEntry)


def drop(apps, schema_editor):
    schema_editor.delete_model(apps.get_model("example", "LedgerEntry"))


class Migration(migrations.Migration):
    initial = True
    dependencies = [("app", "0001_jobs")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="LedgerEntry",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("account", models.CharField(max_length=100)),
                        ("amount", models.IntegerField()),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                    ],
                    options={"verbose_name_plural": "ledger entries"},
                ),
            ],
        ),
        migrations.RunPython(adopt_or_create, drop),
    ]
