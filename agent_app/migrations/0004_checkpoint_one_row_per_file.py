"""One Checkpoint row per file: duplicate rows (saves at an unchanged version) are merged into the
newest one, then a unique constraint keeps it so; size, sha256 and status record file checks."""

from django.db import migrations, models


def merge_duplicate_rows(apps, schema_editor):
    """Keep the newest row of each path: it holds the metadata of the file as last written."""
    Checkpoint = apps.get_model("agent_app", "Checkpoint")
    duplicated = (
        Checkpoint.objects.values("path").annotate(rows=models.Count("id")).filter(rows__gt=1)
    )
    for entry in duplicated:
        rows = Checkpoint.objects.filter(path=entry["path"]).order_by("-created_at", "-id")
        newest = rows.first()
        rows.exclude(pk=newest.pk).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("agent_app", "0003_operators"),
    ]

    operations = [
        migrations.AddField(
            model_name="checkpoint",
            name="size",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="checkpoint",
            name="sha256",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddField(
            model_name="checkpoint",
            name="status",
            field=models.CharField(
                choices=[("ok", "ok"), ("missing", "file missing"), ("damaged", "file damaged"),
                         ("incompatible", "another architecture")],
                default="ok", max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="checkpoint",
            name="problem",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="checkpoint",
            name="checked_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(merge_duplicate_rows, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="checkpoint",
            constraint=models.UniqueConstraint(fields=("path",), name="one_checkpoint_row_per_file"),
        ),
    ]
