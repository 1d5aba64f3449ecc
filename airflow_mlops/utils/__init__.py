"""Small helpers shared across the package; none of them imports Airflow or a heavy library."""
