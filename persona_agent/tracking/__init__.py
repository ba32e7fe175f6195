"""MLflow: a run per persona version (`tracker.Tracker`) and the pyfunc model that serves a saved program.

Not storage: DuckDB is the source of truth; MLflow holds the history and the servable artifacts.
"""
