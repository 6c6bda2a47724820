-- One PostgreSQL for the stack: Prefect uses the default database, MLflow two of its own.
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
