"""An app's ``exports.py``, as a project's own app would declare its exports."""

from tasks.exports.registry import Export, export_register

export_register(Export(name="declared_in_an_app", sql="SELECT 1 AS one"))
