#!/bin/sh
# MLflow tracking server with basic authentication, configured only from the environment.
# The same script runs in the compose stack and, on 127.0.0.1, in ragcycle's server tests.
#
#   MLFLOW_BACKEND_STORE_URI        runs, metrics, model registry (PostgreSQL in compose)
#   MLFLOW_AUTH_DATABASE_URI        users and permissions of the basic-auth app
#   MLFLOW_AUTH_ADMIN_USERNAME/_PASSWORD  the admin account, created on first start
#   MLFLOW_FLASK_SERVER_SECRET_KEY  CSRF key of the auth app (the same for every worker)
#   MLFLOW_HOST (127.0.0.1)  MLFLOW_PORT (5000)  MLFLOW_WORKERS (2)
#   MLFLOW_ARTIFACTS_DESTINATION (/mlartifacts)  MLFLOW_ALLOWED_HOSTS (localhost, 127.0.0.1)
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?}" "${MLFLOW_AUTH_DATABASE_URI:?}"
: "${MLFLOW_AUTH_ADMIN_USERNAME:?}" "${MLFLOW_AUTH_ADMIN_PASSWORD:?}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?}"
umask 077
config="$(mktemp -d)/basic_auth.ini"
# The admin password stays in the environment (MLflow reads MLFLOW_AUTH_ADMIN_*); the file only
# names the user store, and is readable by this user alone.
cat > "$config" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$config"
exec mlflow server \
  --app-name basic-auth \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/mlartifacts}" \
  --serve-artifacts \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-localhost,localhost:*,127.0.0.1,127.0.0.1:*}" \
  --host "${MLFLOW_HOST:-127.0.0.1}" \
  --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-2}"
