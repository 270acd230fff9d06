"""Exports: a declared queryset or SQL report, written as CSV, XLSX or JSON Lines (optionally
gzipped) in constant memory, stored under an unguessable name, and delivered by a signed link."""
