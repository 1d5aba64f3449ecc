"""Kill-point tests: SIGKILL real Airflow task processes at named steps and let Airflow retry them."""
